"""Finding model weights: on disk first (mmlib's own folder, the Hugging Face cache), then on the
hub when there is a network. When a file is missing and there is no network, one error says
which file, where to get it, where to put it and how to point mmlib at it: never a retry loop.

Where mmlib looks first for a pretrained CLIP tag: ``MMLIB_HOME/full/<model>-<tag>/`` holding
``open_clip_model.safetensors`` (or ``open_clip_pytorch_model.bin``), the folder that
`mmlib zoo download full` fills.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path

import torch

from mmlib.env import MMLibError, cache_dir
from mmlib.store.checkpoints import DamagedFileError, check_file

HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class WeightsNotFoundError(MMLibError, FileNotFoundError):
    """Model weights are not on disk and cannot be downloaded now."""


def local_weights_dir(model_name: str, tag: str, home: str | os.PathLike | None = None) -> Path:
    """Return the folder where mmlib keeps the weights of (model_name, tag): MMLIB_HOME/full/..."""
    return cache_dir(home) / "full" / f"{model_name}-{tag}"


def find_local_weights(
    model_name: str, tag: str, home: str | os.PathLike | None = None
) -> Path | None:
    """Return the weights file of (model_name, tag) in mmlib's own folder, or None."""
    folder = local_weights_dir(model_name, tag, home)
    for name in HF_WEIGHT_FILES:
        if (folder / name).is_file() and (folder / name).stat().st_size > 0:
            return folder / name
    return None


def is_offline(timeout: float = 2.0) -> bool:
    """Return True when downloads cannot happen: HF_HUB_OFFLINE is set or the hub is unreachable."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return True
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return False
    except OSError:
        return True


def hf_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the Hugging Face hub cache directory that mmlib reads (and downloads into)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def find_in_hf_cache(
    repo_id: str, filenames: Sequence[str], cache_dir: str | os.PathLike | None = None
) -> Path | None:
    """Return the first of `filenames` present in the hub cache for `repo_id`, or None."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=str(hf_cache_dir(cache_dir)))
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def _missing_weights_message(repo_id: str, filenames: Sequence[str], cache_dir, what: str) -> str:
    cache = hf_cache_dir(cache_dir)
    repo_folder = cache / f"models--{repo_id.replace('/', '--')}"
    url = f"https://huggingface.co/{repo_id}/resolve/main/{filenames[0]}"
    return (
        f"The weights for {what} are not on this machine and cannot be downloaded now "
        f"(offline or HF_HUB_OFFLINE=1).\n"
        f"  Missing file: {filenames[0]} (or {', '.join(filenames[1:]) or 'nothing else'}) "
        f"of the Hugging Face repo {repo_id}\n"
        f"  Download it on a machine with a network: {url}\n"
        f"  Then either:\n"
        f"    - copy the hub cache folder {repo_folder} to this machine (what "
        f"`huggingface-cli download {repo_id} {filenames[0]}` makes), or\n"
        f"    - pass the file itself: load_clip(..., pretrained='/path/to/{filenames[0]}'), or\n"
        f"    - run `mmlib zoo download full` where there is a network and copy MMLIB_HOME over.\n"
        f"  To work without these weights, use the tiny profile (MMLIB_PROFILE=tiny)."
    )


def resolve_hf_file(
    repo_id: str,
    filenames: Sequence[str] = HF_WEIGHT_FILES,
    cache_dir: str | os.PathLike | None = None,
    what: str | None = None,
) -> Path:
    """Return a local path to one of `filenames` of `repo_id`: cached, or downloaded when online."""
    found = find_in_hf_cache(repo_id, filenames, cache_dir)
    if found is not None:
        return found
    what = what or f"hf-hub:{repo_id}"
    if is_offline():
        raise WeightsNotFoundError(_missing_weights_message(repo_id, filenames, cache_dir, what))
    from huggingface_hub import hf_hub_download

    errors = []
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id, filename, cache_dir=str(hf_cache_dir(cache_dir))))
        except Exception as err:  # the hub client raises many kinds; report them all at once
            errors.append(f"{filename}: {type(err).__name__}: {err}")
    raise WeightsNotFoundError(
        _missing_weights_message(repo_id, filenames, cache_dir, what)
        + "\n  Download attempts failed:\n    "
        + "\n    ".join(errors)
    )


def _check_safetensors_length(path: Path) -> None:
    """Raise a ValueError when a safetensors file is shorter (or longer) than its header says:
    a download that was cut short keeps a valid header and loses tensors at the end."""
    import json
    import struct

    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > path.stat().st_size:
            raise ValueError(f"its header claims {n} bytes, more than the file holds")
        header = json.loads(fh.read(n))
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != path.stat().st_size:
        raise ValueError(
            f"it holds {path.stat().st_size} bytes where its header needs {8 + n + end}"
        )


def check_checkpoint_file(
    path: str | os.PathLike, weights_only: bool = True, hint: str = "Download the file again."
) -> Path:
    """Return `path` when torch or safetensors can read it as a checkpoint; else raise a
    DamagedFileError (a ValueError) that names the file, says what is wrong and what to do."""
    path = check_file(path, "checkpoint", hint)
    try:
        if path.suffix == ".safetensors":
            _check_safetensors_length(path)
        else:
            torch.load(path, map_location="meta", weights_only=weights_only, mmap=True)
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise DamagedFileError(
            f"the checkpoint {str(path)!r} is not a checkpoint mmlib can read "
            f"({type(err).__name__}: {first}): expected a complete .safetensors file or a torch "
            f"state_dict (.pt/.pth/.bin). {hint}"
        ) from err
    return path
