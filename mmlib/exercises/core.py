"""Checking a learner's function against mmlib's, on fresh inputs, in one line.

A fill-in cell holds a function whose key lines are `...` (with a hint); the cell after it
calls `check(EXERCISE, the_function)`, which runs both on a few seeded inputs and prints one
line: right; not filled in yet; or what is wrong. When the learner's output equals one of the
exercise's known mistakes (a sign, a missing scale, a wrong axis), that mistake's line is said;
otherwise the first difference found (the type, the shape, then the values).

`check` returns the function the rest of the notebook should use: the learner's when it is
right, else mmlib's own, so a notebook runs top to bottom before anything is filled in. Under
``MMLIB_EXERCISES=strict`` (the run of the notebooks with their solutions filled in) anything
but right raises instead.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from mmlib.env import MMLibError

STRICT_ENV = "MMLIB_EXERCISES"
SEEDS = (0, 1, 2)  # three fresh inputs per check


class ExerciseError(MMLibError):
    """An exercise is blank or wrong where it must be right (MMLIB_EXERCISES=strict)."""


@dataclass
class Mistake:
    """A likely wrong answer: `made(*inputs)` gives what it returns, `says` names it."""

    says: str
    made: Callable


@dataclass
class Exercise:
    """A fill-in exercise: mmlib's `reference` (named `where`), `inputs(seed)` -> the arguments
    it is tried on, and `outputs(fn, args)` -> what is compared (by default `fn(*args)`; an
    exercise about gradients returns them too). `atol` bounds the difference still counted as
    equal, for sums that may be taken in another order."""

    name: str
    where: str
    reference: Callable
    inputs: Callable[[int], tuple]
    mistakes: Sequence[Mistake] = field(default_factory=tuple)
    outputs: Callable | None = None
    atol: float = 1e-5

    def run(self, fn: Callable, args: tuple):
        """Return what `fn` gives on a private copy of `args` (so no answer changes them)."""
        args = copy.deepcopy(args)
        return self.outputs(fn, args) if self.outputs is not None else fn(*args)


@dataclass
class Verdict:
    """What a check found: "right", "blank" or "wrong", and the line that says it."""

    status: str
    line: str

    @property
    def right(self) -> bool:
        return self.status == "right"


def _is_blank(error: Exception) -> bool:
    """Return whether the error comes from a `...` still standing in the learner's function: a
    frame on its way up holds a name bound to `...` (an error message that merely mentions an
    ellipsis, as some of torch's do, is the learner's own mistake)."""
    tb = error.__traceback__
    while tb is not None:
        if any(value is Ellipsis for value in tb.tb_frame.f_locals.values()):
            return True
        tb = tb.tb_next
    return False


def difference(got, want, atol: float, where: str = "the result") -> str | None:
    """Return the first way `got` differs from `want` (type, length, shape, values), or None."""
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            n = len(got) if isinstance(got, (tuple, list)) else 1
            return f"{where} should be {len(want)} values, got {n}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            found = difference(g, w, atol, f"value {i + 1} of {len(want)}")
            if found:
                return found
        return None
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"{where} should be a tensor, got {type(got).__name__}"
        if got.shape != want.shape:
            return f"{where} has shape {tuple(got.shape)}; it should be {tuple(want.shape)}"
        if want.dtype in (torch.bool, torch.long, torch.int32, torch.int64):
            if not torch.equal(got.to(want.dtype), want):
                wrong = (got.to(want.dtype) != want).float().mean().item()
                return f"{where}: {wrong:.0%} of its entries differ from mmlib's"
            return None
        gap = (got.detach().float() - want.detach().float()).abs()
        if not torch.isfinite(got).all():
            return f"{where} holds NaN or inf"
        if gap.max() > atol + 1e-4 * want.detach().abs().max():
            return f"{where} differs from mmlib's by up to {gap.max().item():.3g}"
        return None
    return None if got == want else f"{where} is {got!r}, not {want!r}"


def verdict(exercise: Exercise, learner: Callable) -> Verdict:
    """Return the verdict on `learner` for `exercise` (nothing printed, nothing raised)."""
    name = exercise.name
    for seed in SEEDS:
        args = exercise.inputs(seed)
        want = exercise.run(exercise.reference, args)
        try:
            got = exercise.run(learner, args)
        except Exception as error:  # the learner's code: any error is a finding
            if _is_blank(error):
                return _blank(exercise)
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            return Verdict("wrong", f"✗ {name} raises {type(error).__name__}: {first}")
        if got is Ellipsis or (isinstance(got, tuple) and Ellipsis in got):
            return _blank(exercise)
        if got is None:
            return Verdict("wrong", f"✗ {name} returns None: is its `return` line missing?")
        found = difference(got, want, exercise.atol)
        if found is None:
            continue
        for mistake in exercise.mistakes:
            if difference(got, exercise.run(mistake.made, args), exercise.atol) is None:
                return Verdict("wrong", f"✗ {name}: {mistake.says}")
        return Verdict("wrong", f"✗ {name}: {found}")
    return Verdict(
        "right", f"✓ {name} is right: it matches {exercise.where} on {len(SEEDS)} fresh inputs."
    )


def _blank(exercise: Exercise) -> Verdict:
    return Verdict(
        "blank",
        f"… {exercise.name} is not filled in yet: until it is, this notebook uses mmlib's "
        f"({exercise.where}).",
    )


def check(exercise: Exercise, learner: Callable) -> Callable:
    """Print the verdict on the learner's function; return the function to go on with (theirs
    if right, else mmlib's). Under MMLIB_EXERCISES=strict anything but right raises."""
    found = verdict(exercise, learner)
    stand_in = f" (until it is right, mmlib's {exercise.where} stands in)"
    print(found.line + (stand_in if found.status == "wrong" else ""))
    if found.right:
        return learner
    if os.environ.get(STRICT_ENV, "") == "strict":
        raise ExerciseError(found.line)
    return exercise.reference
