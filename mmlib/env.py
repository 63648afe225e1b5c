"""The environment: which device to use, seeding, Colab detection, the cache dir, how worker
processes start."""

from __future__ import annotations

import multiprocessing
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch


class MMLibError(RuntimeError):
    """An error a learner can act on: the message says what was wrong and what to do."""


def available_devices() -> list[str]:
    """Return the devices this machine has, e.g. ['cpu', 'cuda:0', 'mps']."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        found.append("mps")
    return found


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Return the torch device to use: `device` if given, else `MMLIB_DEVICE`, else cuda > mps > cpu.

    A device this machine does not have is an error that says what it does have.
    """
    source = "device" if device is not None else "MMLIB_DEVICE"
    wanted = device if device is not None else os.environ.get("MMLIB_DEVICE") or None
    if wanted is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        dev = torch.device(wanted)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"{source}={wanted!r} is not a device name; use one of {available_devices()}"
        ) from err
    has = available_devices()
    missing = (
        (dev.type == "cuda" and not torch.cuda.is_available())
        or (dev.type == "cuda" and dev.index is not None and f"cuda:{dev.index}" not in has)
        or (dev.type == "mps" and not _mps_available())
        or dev.type not in ("cpu", "cuda", "mps")
    )
    if missing:
        unset = " (or unset MMLIB_DEVICE to let mmlib pick)" if source == "MMLIB_DEVICE" else ""
        raise ValueError(
            f"{source}={wanted!r} asks for a device this machine does not have; it has {has}. "
            f"Use one of those{unset}."
        )
    return dev


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def module_device(module: torch.nn.Module) -> torch.device:
    """Return the device of a module's first parameter (or buffer); the CPU for an empty one."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def to_device(
    module: torch.nn.Module, device: torch.device, what: str = "model"
) -> torch.nn.Module:
    """Return `module` on `device`, moving it (in place) when it is elsewhere.

    A module that cannot move raises an MMLibError naming both devices, never a torch
    device-mismatch traceback deep inside a forward pass.
    """
    here = module_device(module)
    if here.type == device.type and (device.index is None or here.index == device.index):
        return module
    try:
        return module.to(device)
    except (RuntimeError, NotImplementedError, ValueError) as err:
        raise MMLibError(
            f"the {what} is on {here} and cannot be moved to {device} "
            f"({str(err).splitlines()[0]}); load it on {device} instead (device={str(device)!r})"
        ) from err


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


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """Return mmlib's cache directory: `cache` if given, else `MMLIB_HOME`, else ~/.cache/mmlib."""
    if cache is None:
        cache = os.environ.get("MMLIB_HOME") or Path.home() / ".cache" / "mmlib"
    path = Path(cache).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def autocast(device: torch.device):
    """Return an autocast context: bfloat16/float16 mixed precision on a GPU, a no-op on CPU.

    Why not bfloat16 on a CPU that computes it natively (AVX512-BF16, AMX)? It made some
    training steps faster, but changed what the models learn: the judges and VQGANs trained in
    it judged and drew VQGAN+CLIP's pictures worse than float32 ones (docs/measurements.json,
    "decisions", "cpu_trains_in_float32"). So on a CPU every trainer computes in float32.
    """
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast(device.type, enabled=False)


def apply_start_method() -> str:
    """Use the worker-process start method `MMLIB_START_METHOD` names (if set) and return the
    one in use: a Linux machine can imitate macOS and Windows (`spawn`) or Python 3.14's Linux
    default (`forkserver`). Everything mmlib hands to worker processes can be pickled."""
    wanted = os.environ.get("MMLIB_START_METHOD", "").strip()
    if wanted:
        if wanted not in multiprocessing.get_all_start_methods():
            raise ValueError(
                f"MMLIB_START_METHOD={wanted!r} is not a start method here; choose one of "
                f"{multiprocessing.get_all_start_methods()}"
            )
        multiprocessing.set_start_method(wanted, force=True)
    return multiprocessing.get_start_method()
