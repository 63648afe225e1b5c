"""The cache of made models: a folder per recipe under MMLIB_HOME/models, made once.

A model's folder is named by its recipe (`model_key`: name plus a hash of its config, the
parts that decide its weights, and mmlib's version), so a changed recipe makes a new folder
and never reuses an old one. `make_once` makes a missing folder under a file lock, so two
notebooks (or `mmlib zoo prepare` lanes) wait for one training instead of both training;
`read_made` reads a made folder's ``mmlib.json`` and checks its files. Which models there are,
and what their recipes hold: `mmlib.recipes`, `mmlib.tiny_models` and `mmlib.tiny_generators`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock

from mmlib import __version__
from mmlib.env import MMLibError, cache_dir
from mmlib.store.checkpoints import model_dir_complete, read_model_dir


class NotPreparedError(MMLibError):
    """A model is not in MMLIB_HOME and this machine was told not to train (MMLIB_NO_TRAINING)."""


def model_key(name: str, config: dict, **parts) -> str:
    """Return a folder name for a model: its name plus a hash of config, parts and mmlib version."""
    blob = json.dumps({"config": config, "version": __version__, **parts}, sort_keys=True)
    return f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def model_folder(key: str, home: str | os.PathLike | None = None) -> Path:
    """Return the folder of the model `key` (`model_key`) in MMLIB_HOME (or `home`)."""
    return cache_dir(home) / "models" / key


def runs_folder(folder: Path) -> Path:
    """Return where the training run of a model folder keeps its checkpoints (beside the models,
    under runs/): an interrupted training resumes from there."""
    return folder.parent.parent / "runs" / folder.name


def provenance(dev: torch.device) -> dict:
    """Return where and with what a model was made: mmlib and torch versions, device, threads."""
    return {
        "mmlib_version": __version__,
        "device": str(dev),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def make_once(folder: Path, make: Callable[[], None]) -> Path:
    """Run `make()` unless `folder` is complete; a file lock lets one process do it at a time
    (threads, forked or spawned processes, other notebooks); return the folder.

    With MMLIB_NO_TRAINING=1 (a workshop laptop that should only ever import a pack), a missing
    model is an error that says how to get it, instead of minutes of training.
    """
    if not model_dir_complete(folder):
        if os.environ.get("MMLIB_NO_TRAINING", "") not in ("", "0"):
            raise NotPreparedError(
                f"{folder.name} is not in {str(folder.parent)!r} and MMLIB_NO_TRAINING is set: "
                f"import the course's model pack (`mmlib zoo import FILE|URL`), or unset "
                f"MMLIB_NO_TRAINING to train it here (`mmlib zoo prepare`)."
            )
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock"):
            if not model_dir_complete(folder):  # another process may have made it meanwhile
                make()
    return folder


def read_made(folder: Path, needs: tuple[str, ...] = ()) -> dict:
    """Return the mmlib.json of a made model, checking its files (a damaged one: say so)."""
    hint = f"Delete the folder {str(folder)!r}: `mmlib zoo prepare` makes it again."
    return read_model_dir(folder, needs, hint)
