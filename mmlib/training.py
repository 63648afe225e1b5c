"""What every trainer of the course shares, as plain functions: a progress bar, a history, the
learning rate of a step, "due every N steps", resuming from the last checkpoint, and stopping on
a NaN loss. Each trainer keeps its own loop, readable in one sitting; checkpoints themselves are
written by `mmlib.store.checkpoints`.

The skeleton every loop of the course follows::

    start, history = resume(folder, model, optimizer, config)
    for step in progress_bar(start, steps, "train X"):
        set_lr(optimizer, cosine_lr(step, steps, warmup, lr))
        loss = ...
        check_finite(loss, step, folder)
        ...backward, step...
        if due(step, log_every, steps): history.log(step, loss=loss)
        if folder and due(step, checkpoint_every, steps): save_checkpoint(...)

A config's `recipe` is what a model cache keys on: every field that can change the weights.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from mmlib.env import MMLibError
from mmlib.store.checkpoints import checkpoint_exists, load_checkpoint, read_step

# Fields a trainer's config may have that decide when a run logs, evaluates or checkpoints, or how
# many processes render the same batches in the same order: never which weights come out.
# (tests/test_training.py and, for num_workers, tests/test_workers.py train with them changed and
# check the weights are bit-identical.) Checkpoints compare recipes too: a run resumes with other
# bookkeeping.
BOOKKEEPING = frozenset(
    {"log_every", "eval_every", "eval_per_pair", "checkpoint_every", "num_workers"}
)


def recipe(config) -> dict:
    """Return a training config's fields as a dict, less its BOOKKEEPING: what decides the
    weights, and so what a model cache keys on."""
    return {k: v for k, v in asdict(config).items() if k not in BOOKKEEPING}


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


def bars_on(enabled: bool = True) -> bool:
    """Return whether a progress bar shows: not when its caller says no, nor under TQDM_DISABLE=1
    (the workers of `mmlib zoo prepare` set it: their parent shows one bar for all of them; tqdm
    itself reads the variable only when imported, and a bar given `disable=` ignores it)."""
    return enabled and os.environ.get("TQDM_DISABLE", "") in ("", "0", "false", "False")


def progress_bar(start: int, total: int, desc: str, enabled: bool = True):
    """Return a tqdm.auto bar over steps [start, total), shown when `bars_on(enabled)`."""
    enabled = bars_on(enabled)
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


@contextmanager
def frozen(*modules: torch.nn.Module) -> Iterator[None]:
    """Within the block, no parameter of `modules` asks for a gradient (an optimisation of an
    input, such as VQGAN+CLIP's latent, then spends nothing on the weights' gradients); after
    it, every parameter asks for one again exactly if it did before."""
    params = [p for m in modules for p in m.parameters()]
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, before, strict=True):
            p.requires_grad_(flag)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> float:
    """Set the learning rate of every parameter group of `optimizer` to `lr`; return it."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def due(step: int, every: int, total: int, first: bool = False) -> bool:
    """Return True when something done "every `every` steps" is due after `step` (0-based): after
    steps every-1, 2*every-1, ... and after the last one (with `first`, also after step 0: the
    start of a curve). `every` = 0 means never."""
    done = step + 1
    return bool(every) and (done % every == 0 or done == total or (first and step == 0))


def resume(
    folder: str | os.PathLike | None,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | list[torch.optim.Optimizer] | None,
    config: dict,
) -> tuple[int, History]:
    """Return (first step, history) of a run: from the checkpoint in `folder` when there is one
    (model, optimizers and RNG state restored; it must have been made with `config`), else
    (0, an empty History)."""
    if folder is None or not checkpoint_exists(folder):
        return 0, History()
    step, records = load_checkpoint(folder, model, optimizer, config)
    return step, History(records)
