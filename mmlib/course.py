"""Setting a notebook up: its profile, its seeds, what a fresh Colab VM lacks, and the key
figures it reports (which `mmlib course` and the notebook tests collect).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mmlib import PACK_URL, zoo
from mmlib.env import in_colab, seed_everything
from mmlib.store import packs
from mmlib.store.fetch import DownloadError
from mmlib.widgets import colab_widget_manager

REPORT_ENV = "MMLIB_COURSE_REPORT"  # where `key_figure` records, set by the runner


def use_profile(default: str) -> str:
    """Return the profile a notebook runs in: MMLIB_PROFILE if set, else its parameter `default`."""
    profile = zoo.get_profile(os.environ.get("MMLIB_PROFILE") or default)
    os.environ["MMLIB_PROFILE"] = profile
    return profile


def setup(default: str = "tiny", seed: int = 0) -> str:
    """Set a notebook up and return its profile: the profile (`use_profile`), every random
    generator seeded, and on Colab what a fresh VM lacks: the widget manager ipywidgets 8 needs,
    and the tiny profile's models, imported from the course's model pack (seconds) instead of
    trained (minutes). Says in one line what it did when there was something to do."""
    profile = use_profile(default)
    seed_everything(seed)
    if in_colab():
        colab_widget_manager()
        if profile == "tiny" and zoo.missing_models():
            try:
                names = packs.fetch_and_import(PACK_URL)
                print(f"imported the course's {len(names)} tiny models from {PACK_URL}")
            except (DownloadError, packs.PackError) as err:
                print(
                    f"could not import the model pack ({err}); the tiny models will be "
                    f"trained the first time a notebook needs them"
                )
    return profile


def key_figure(name: str, value, unit: str = "") -> None:
    """Show a notebook's key figure and record it for the course runner's summary line."""
    text = f"{value:.3g}" if isinstance(value, float) else str(value)
    print(f"{name}: {text}{unit}")
    target = os.environ.get(REPORT_ENV)
    if target:
        path = Path(target)
        data = json.loads(path.read_text()) if path.is_file() else {}
        data[name] = f"{text}{unit}"
        path.write_text(json.dumps(data))
