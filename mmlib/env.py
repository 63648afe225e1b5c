"""The environment: which device to use, seeding, Colab detection, the cache dir, `mmlib doctor`."""

from __future__ import annotations

import os
import platform
import random
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

PROFILES = ("tiny", "full")


class MMLibError(RuntimeError):
    """An error a learner can act on: the message says what was wrong and what to do."""


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Return the torch device to use: `device` if given, else `MMLIB_DEVICE`, else cuda > mps > cpu."""
    wanted = device if device is not None else os.environ.get("MMLIB_DEVICE") or None
    if wanted is not None:
        try:
            dev = torch.device(wanted)
        except (RuntimeError, TypeError) as err:
            raise ValueError(
                f"device={wanted!r} is not a torch device; use 'cpu', 'cuda', 'cuda:1' or 'mps'"
            ) from err
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={wanted!r} was asked for, but this machine has no CUDA GPU")
        if dev.type == "mps" and not _mps_available():
            raise ValueError(f"device={wanted!r} was asked for, but MPS is not available here")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a torch.Generator seeded the same way."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def in_colab() -> bool:
    """Return True when running inside Google Colab."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def get_profile(profile: str | None = None) -> str:
    """Return the profile to use: `profile` if given, else `MMLIB_PROFILE`, else 'tiny'."""
    chosen = profile if profile is not None else os.environ.get("MMLIB_PROFILE", "tiny")
    chosen = chosen.strip().lower()
    if chosen not in PROFILES:
        raise ValueError(f"profile={chosen!r} is not known; choose one of {list(PROFILES)}")
    return chosen


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """Return mmlib's cache directory: `cache` if given, else `MMLIB_HOME`, else ~/.cache/mmlib."""
    if cache is None:
        cache = os.environ.get("MMLIB_HOME") or Path.home() / ".cache" / "mmlib"
    path = Path(cache).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def autocast(device: torch.device):
    """Return an autocast context: bfloat16/float16 mixed precision on a GPU, a no-op on CPU."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast(device.type, enabled=False)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def doctor_report(profile: str | None = None, cache: str | os.PathLike | None = None) -> dict:
    """Return what `mmlib doctor` prints: versions, device, profile, cache dir, full-profile weights."""
    from mmlib import zoo  # zoo imports env: import here to keep env at the bottom

    dev = get_device()
    report = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{
            name: _version(name)
            for name in (
                "mmlib",
                "torch",
                "torchvision",
                "open_clip_torch",
                "taming-transformers",
                "matplotlib",
                "ipywidgets",
                "papermill",
                "faiss-cpu",
            )
        },
        "device": str(dev),
        "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else "none",
        "threads": torch.get_num_threads(),
        "colab": in_colab(),
        "profile": get_profile(profile),
        "cache_dir": str(cache_dir(cache)),
        "offline": os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false"),
    }
    for item in zoo.full_profile_status(cache):
        state = "present" if item["present"] else "missing"
        report[f"full: {item['name']}"] = f"optional, {state}" if item["optional"] else state
    return report


def doctor(profile: str | None = None, cache: str | os.PathLike | None = None) -> dict:
    """Print the environment check and return it as a dict."""
    report = doctor_report(profile, cache)
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")
    missing = [k for k, v in report.items() if k.startswith("full: ") and v == "missing"]
    if missing:
        print(
            "\nThe full profile's weights are not here (the tiny profile needs none). "
            "`mmlib zoo download full` fetches them or says exactly where to put them."
        )
    return report
