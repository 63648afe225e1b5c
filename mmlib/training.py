"""What every trainer of the course shares: progress, a history, atomic safetensors checkpoints
(model, optimizer and RNG state), resume, and stopping on a NaN loss.

A checkpoint is a folder: ``model.safetensors``, ``optimizer.safetensors`` (tensors of the
optimizer state and the RNG state) and ``state.json`` (step, config, history, the rest of the
optimizer state). It is written to a temporary folder and renamed into place, so a crash leaves
either the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from mmlib.env import MMLibError


class NonFiniteLossError(MMLibError):
    """The loss became NaN or infinite; training stopped and the last good checkpoint is kept."""


@dataclass
class History:
    """A list of per-step records, e.g. {"step": 10, "loss": 2.3, "lr": 1e-3}."""

    records: list[dict] = field(default_factory=list)

    def log(self, step: int, **values) -> None:
        """Add a record for `step`."""
        self.records.append({"step": int(step), **{k: _plain(v) for k, v in values.items()}})

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """Return (steps, values) of every record that has `key`."""
        rows = [r for r in self.records if key in r]
        return [r["step"] for r in rows], [r[key] for r in rows]

    def last(self, key: str, default=None):
        """Return the most recent value of `key`."""
        _, values = self.series(key)
        return values[-1] if values else default


def _plain(value):
    if isinstance(value, torch.Tensor):
        return value.item()
    return value


def cosine_lr(step: int, total: int, warmup: int, base_lr: float, min_ratio: float = 0.0) -> float:
    """Return the learning rate at `step`: linear warm-up, then a cosine decay to min_ratio*base."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return base_lr * (min_ratio + (1 - min_ratio) * cosine)


def progress_bar(start: int, total: int, desc: str, enabled: bool = True):
    """Return a tqdm.auto bar over steps [start, total)."""
    return tqdm(
        range(start, total),
        initial=start,
        total=total,
        desc=desc,
        disable=not enabled,
        dynamic_ncols=True,
    )


def check_finite(loss: torch.Tensor, step: int, folder: str | os.PathLike | None) -> None:
    """Raise NonFiniteLossError (naming the step and the kept checkpoint) when `loss` is not finite."""
    if torch.isfinite(loss).all():
        return
    kept = (
        f"The last good checkpoint is kept in {str(folder)!r} (step {read_step(folder)})."
        if folder is not None and checkpoint_exists(folder)
        else "No checkpoint was written yet."
    )
    raise NonFiniteLossError(
        f"the loss became {loss.item()} at step {step}, so training stopped. {kept} "
        f"A lower learning rate or a shorter warm-up usually cures this."
    )


# ---------------------------------------------------------------------------------------------
# Checkpoints
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


def checkpoint_exists(folder: str | os.PathLike) -> bool:
    """Return True when `folder` holds a complete checkpoint."""
    return (Path(folder) / "state.json").is_file()


def read_step(folder: str | os.PathLike) -> int | None:
    """Return the step of the checkpoint in `folder`, or None."""
    path = Path(folder) / "state.json"
    return json.loads(path.read_text())["step"] if path.is_file() else None


def save_checkpoint(
    folder: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | list[torch.optim.Optimizer] | None,
    step: int,
    config: dict,
    history: History,
) -> Path:
    """Write a checkpoint folder atomically; return its path."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        str(tmp / "model.safetensors"),
    )
    optimizers = (
        optimizer if isinstance(optimizer, (list, tuple)) else [optimizer] if optimizer else []
    )
    opt_tensors, opt_plain = {}, []
    for k, opt in enumerate(optimizers):  # a GAN has two optimizers
        tensors, plain = _split_optimizer(opt)
        opt_tensors.update({f"opt{k}.{name}": t for name, t in tensors.items()})
        opt_plain.append(plain)
    opt_tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        opt_tensors["rng.cuda"] = torch.cuda.get_rng_state()
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    state = {"step": step, "config": config, "history": history.records, "optimizer": opt_plain}
    (tmp / "state.json").write_text(json.dumps(state))
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def load_checkpoint(
    folder: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | list[torch.optim.Optimizer] | None = None,
    config: dict | None = None,
) -> tuple[int, History]:
    """Load a checkpoint into `model` (and `optimizer`, RNG); return (step, history).

    Raises ValueError when the checkpoint was made with another `config`.
    """
    folder = Path(folder)
    if not checkpoint_exists(folder):
        old = folder.with_name(folder.name + ".old")  # a crash between the two renames
        if checkpoint_exists(old):
            folder = old
        else:
            raise FileNotFoundError(f"no checkpoint in {str(folder)!r}")
    state = json.loads((folder / "state.json").read_text())
    if config is not None and state["config"] != config:
        diff = {
            k: (state["config"].get(k), v) for k, v in config.items() if state["config"].get(k) != v
        }
        raise ValueError(
            f"the checkpoint in {str(folder)!r} was made with another config "
            f"(saved vs asked: {diff}); delete it or pass the config it was made with"
        )
    model = getattr(model, "module", model)
    weights = load_file(str(folder / "model.safetensors"))
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(
            f"the checkpoint in {str(folder)!r} does not fit this model: {str(err).splitlines()[0]}"
        ) from err
    tensors = load_file(str(folder / "optimizer.safetensors"))
    optimizers = (
        optimizer if isinstance(optimizer, (list, tuple)) else [optimizer] if optimizer else []
    )
    for k, opt in enumerate(optimizers):
        prefix = f"opt{k}."
        mine = {n[len(prefix) :]: t for n, t in tensors.items() if n.startswith(prefix)}
        opt.load_state_dict(_join_optimizer(mine, state["optimizer"][k]))
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return state["step"], History(state["history"])
