"""`mmlib doctor`: what this machine has, and what the course will use on it.

Versions, which torch build is installed (CPU-only or CUDA), the device mmlib picks, the worker
start method, the profile, the cache folder and its disk's free space, whether the tiny models
are prepared and whether the full profile's weights are here. When something in the course
fails, look here first.
"""

from __future__ import annotations

import os
import platform
import shutil
from importlib import metadata

import torch

from mmlib import tiny_models, zoo
from mmlib.env import apply_start_method, cache_dir, get_device, in_colab
from mmlib.store.downloads import full_profile_status

PACKAGES = (
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


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def torch_build() -> str:
    """Return which torch build is installed: 'CPU only', 'CUDA 12.8', 'ROCm ...'."""
    if torch.version.cuda:
        return f"CUDA {torch.version.cuda}"
    if getattr(torch.version, "hip", None):
        return f"ROCm {torch.version.hip}"
    return "CPU only"


def disk_free(path: str | os.PathLike) -> str:
    """Return the free space of the disk that holds path (or would: its nearest existing folder)."""
    folder = os.path.abspath(path)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    return f"{shutil.disk_usage(folder).free / 1024**3:.1f} GB"


def doctor_report(profile: str | None = None, cache: str | os.PathLike | None = None) -> dict:
    """Return what `mmlib doctor` prints: versions, build, device, profile, cache, weights."""
    dev = get_device()
    report = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{name: _version(name) for name in PACKAGES},
        "torch build": torch_build(),
        "device": str(dev),
        "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else "none",
        "tiny models train on": str(tiny_models.training_device()),
        "threads": torch.get_num_threads(),
        "worker start method": apply_start_method(),
        "colab": in_colab(),
        "profile": zoo.get_profile(profile),
        "cache_dir": str(cache_dir(cache)),
        "disk free (cache_dir)": disk_free(cache_dir(cache)),
        "tiny models prepared": zoo.prepared_summary(cache),
        "offline": os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false"),
    }
    for item in full_profile_status(cache):
        state = "present" if item["present"] else "missing"
        report[f"full: {item['name']}"] = f"optional, {state}" if item["optional"] else state
    return report


def doctor(profile: str | None = None, cache: str | os.PathLike | None = None) -> dict:
    """Print the environment check and return it as a dict."""
    report = doctor_report(profile, cache)
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")
    if report["torch build"] != "CPU only" and report["gpu"] == "none":
        print(
            "\nThis torch is a CUDA build but there is no NVIDIA GPU: the CPU-only build is the "
            "same torch in a fraction of the disk space (README, 'Install size')."
        )
    missing = [k for k, v in report.items() if k.startswith("full: ") and v == "missing"]
    if missing:
        print(
            "\nThe full profile's weights are not here (the tiny profile needs none). "
            "`mmlib zoo download full` fetches them or says exactly where to put them."
        )
    return report
