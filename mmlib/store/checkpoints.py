"""Files mmlib writes and reads back: model folders and training checkpoints.

Every folder is written the same way (`write_folder`): into a temporary folder first, then
renamed into place, the previous copy kept as ``NAME.old`` until the new one stands. A crash at
any moment leaves the old folder, the new one, or the old one under ``NAME.old``, which the next
read puts back (`recover_folder`): never half of one, never neither.

- A **model folder** holds weights (``*.safetensors``), text files (configs) and ``mmlib.json``
  saying how it was made; `read_model_dir` checks that everything it needs is there and readable.
- A **checkpoint** is a model folder of a training run: ``model.safetensors``,
  ``optimizer.safetensors`` (optimizer and RNG state) and ``state.json`` (step, config, history).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mmlib.env import MMLibError

INFO = "mmlib.json"  # how a model folder was made
HTML_MARKERS = (b"<!doctype html", b"<html")


class DamagedFileError(MMLibError, ValueError):
    """A file mmlib needs exists but cannot be what it should be (empty, cut short, a web page)."""


# ---------------------------------------------------------------------------------------------
# Atomic folders
# ---------------------------------------------------------------------------------------------


def _sibling(folder: Path, suffix: str) -> Path:
    return folder.with_name(folder.name + suffix)


def recover_folder(folder: str | os.PathLike) -> Path:
    """Return `folder`, first putting back ``folder.old`` when a writer died between its renames."""
    folder = Path(folder)
    old = _sibling(folder, ".old")
    if not folder.exists() and old.is_dir():
        os.replace(old, folder)
    return folder


def write_folder(folder: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) on a fresh temporary folder, then put it in place of `folder`; return it.

    The steps: write `tmp`; rename an existing `folder` to ``folder.old``; rename `tmp` to
    `folder`; delete ``folder.old``. Whatever step a crash stops at, `recover_folder` finds
    a complete folder (the old or the new one).
    """
    folder = recover_folder(folder)
    tmp, old = _sibling(folder, f".tmp{os.getpid()}"), _sibling(folder, ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


# ---------------------------------------------------------------------------------------------
# Checking files
# ---------------------------------------------------------------------------------------------


def is_html(head: bytes) -> bool:
    """Return True when the first bytes of a file are a web page (an error page saved by a
    download instead of the file)."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return text.startswith(HTML_MARKERS) or b"<html" in text[:1024]


def check_file(path: str | os.PathLike, what: str = "file", hint: str = "") -> Path:
    """Return `path` when it is a non-empty file that is not a web page; else raise
    FileNotFoundError or DamagedFileError naming the file, with `hint` (what to do)."""
    path = Path(path)
    hint = f" {hint}" if hint else ""
    if not path.is_file():
        raise FileNotFoundError(f"the {what} {str(path)!r} is missing.{hint}")
    if path.stat().st_size == 0:
        raise DamagedFileError(f"the {what} {str(path)!r} is empty (0 bytes).{hint}")
    with open(path, "rb") as fh:
        head = fh.read(2048)
    if is_html(head):
        raise DamagedFileError(
            f"the {what} {str(path)!r} is an HTML page, not the file: the download probably "
            f"returned an error page.{hint or ' Download it again.'}"
        )
    return path


def load_weights(path: str | os.PathLike, what: str = "weights file", hint: str = "") -> dict:
    """Return the tensors of a safetensors file, or raise a DamagedFileError naming it."""
    path = check_file(path, what, hint)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise DamagedFileError(
            f"the {what} {str(path)!r} is not a complete safetensors file ({err}): cut short "
            f"or damaged.{' ' + hint if hint else ''}"
        ) from err


# ---------------------------------------------------------------------------------------------
# Model folders
# ---------------------------------------------------------------------------------------------


def state_dict_cpu(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Return a copy of the model's state dict on the CPU, contiguous (as safetensors wants)."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}


def save_model_dir(
    folder: str | os.PathLike,
    weights: Mapping[str, Mapping[str, torch.Tensor]],
    info: dict,
    files: Mapping[str, str | bytes] | None = None,
) -> Path:
    """Write a model folder atomically: `weights` {file name: tensors} as safetensors, `files`
    {file name: text or bytes} (configs, a vocabulary) and `info` as mmlib.json; return it."""

    def write(tmp: Path) -> None:
        for name, tensors in weights.items():
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / name))
        for name, content in (files or {}).items():
            if isinstance(content, bytes):
                (tmp / name).write_bytes(content)
            else:
                (tmp / name).write_text(content)
        (tmp / INFO).write_text(json.dumps(info, indent=1))

    return write_folder(folder, write)


def model_dir_complete(folder: str | os.PathLike) -> bool:
    """Return True when `folder` is a finished model folder (its mmlib.json is written last)."""
    return (recover_folder(folder) / INFO).is_file()


def read_model_dir(folder: str | os.PathLike, needs: tuple[str, ...] = (), hint: str = "") -> dict:
    """Return the mmlib.json of a model folder after checking that it and the files `needs` are
    there and are not empty or web pages; errors name the file and say what to do (`hint`)."""
    folder = recover_folder(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no model folder at {str(folder)!r}.{' ' + hint if hint else ''}")
    for name in needs:
        check_file(folder / name, "model file", hint)
    path = check_file(folder / INFO, "model description", hint)
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise DamagedFileError(f"{str(path)!r} is not valid JSON ({err}). {hint}") from err


# ---------------------------------------------------------------------------------------------
# Training checkpoints
# ---------------------------------------------------------------------------------------------


def _split_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = optimizer.state_dict()
    tensors, plain = {}, {"param_groups": sd["param_groups"], "state": {}}
    for idx, state in sd["state"].items():
        plain["state"][str(idx)] = {}
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain["state"][str(idx)][name] = value
    return tensors, plain


def _join_optimizer(tensors: dict, plain: dict) -> dict:
    state = {int(idx): dict(values) for idx, values in plain["state"].items()}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": plain["param_groups"]}


def _as_list(optimizer) -> list:
    if optimizer is None:
        return []
    return list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]


def checkpoint_exists(folder: str | os.PathLike) -> bool:
    """Return True when `folder` holds a complete checkpoint."""
    return (recover_folder(folder) / "state.json").is_file()


def read_step(folder: str | os.PathLike) -> int | None:
    """Return the step of the checkpoint in `folder`, or None."""
    path = recover_folder(folder) / "state.json"
    return json.loads(path.read_text())["step"] if path.is_file() else None


def save_checkpoint(
    folder: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | list[torch.optim.Optimizer] | None,
    step: int,
    config: dict,
    history,
) -> Path:
    """Write a checkpoint folder atomically (model, optimizers, RNG, step, config, history)."""
    opt_tensors, opt_plain = {}, []
    for k, opt in enumerate(_as_list(optimizer)):  # a GAN has two optimizers
        tensors, plain = _split_optimizer(opt)
        opt_tensors.update({f"opt{k}.{name}": t for name, t in tensors.items()})
        opt_plain.append(plain)
    opt_tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        opt_tensors["rng.cuda"] = torch.cuda.get_rng_state()
    state = {"step": step, "config": config, "history": history.records, "optimizer": opt_plain}

    def write(tmp: Path) -> None:
        save_file(state_dict_cpu(model), str(tmp / "model.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state))

    return write_folder(folder, write)


def load_checkpoint(
    folder: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | list[torch.optim.Optimizer] | None = None,
    config: dict | None = None,
) -> tuple[int, list[dict]]:
    """Load a checkpoint into `model` (and `optimizer`, RNG); return (step, history records).

    Raises ValueError when the checkpoint was made with another `config`.
    """
    folder = recover_folder(folder)
    if not checkpoint_exists(folder):
        raise FileNotFoundError(f"no checkpoint in {str(folder)!r}")
    hint = f"Delete the folder {str(folder)!r} to start the training afresh."
    state = json.loads(check_file(folder / "state.json", "checkpoint state", hint).read_text())
    if config is not None and state["config"] != config:
        saved = state["config"]
        diff = {k: (saved.get(k), v) for k, v in config.items() if saved.get(k) != v}
        raise ValueError(
            f"the checkpoint in {str(folder)!r} was made with another config "
            f"(saved vs asked: {diff}); delete it or pass the config it was made with"
        )
    model = getattr(model, "module", model)
    weights = load_weights(folder / "model.safetensors", "checkpoint", hint)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(
            f"the checkpoint in {str(folder)!r} does not fit this model: {str(err).splitlines()[0]}"
        ) from err
    tensors = load_weights(folder / "optimizer.safetensors", "checkpoint", hint)
    for k, opt in enumerate(_as_list(optimizer)):
        prefix = f"opt{k}."
        mine = {n[len(prefix) :]: t for n, t in tensors.items() if n.startswith(prefix)}
        opt.load_state_dict(_join_optimizer(mine, state["optimizer"][k]))
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return state["step"], state["history"]
