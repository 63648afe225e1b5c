"""Notebook 02's fill-in: the prompt ensemble (`mmlib.zeroshot.ensemble`, which
`build_classifier` runs on the encoded captions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmlib.exercises.core import Exercise, Mistake
from mmlib.zeroshot import ensemble

WRONG_AXIS = (
    "averaged over the wrong axis: average over the templates, axis 1 of (classes, templates, D)"
)


def _features(seed: int) -> tuple[torch.Tensor]:
    # unnormalised on purpose, and classes != templates != D, so that every slip shows
    gen = torch.Generator().manual_seed(seed)
    scale = torch.rand(5, 3, 1, generator=gen) * 3 + 0.2  # templates of different lengths
    return (scale * torch.randn(5, 3, 8, generator=gen),)


def _averaged_over(dim: int):
    return lambda f: F.normalize(F.normalize(f, dim=-1).mean(dim=dim), dim=-1).T


ENSEMBLE = Exercise(
    name="ensemble_by_hand",
    where="mmlib.zeroshot.ensemble",
    reference=ensemble,
    inputs=_features,
    mistakes=[
        Mistake(
            "the template embeddings are averaged before they are normalised: normalise each "
            "to length 1 first, so every template counts the same",
            lambda f: F.normalize(f.mean(dim=1), dim=-1).T,
        ),
        Mistake(
            "the average is not normalised again: each class's column must have length 1",
            lambda f: F.normalize(f, dim=-1).mean(dim=1).T,
        ),
        Mistake(
            "the result is (classes, D): the classifier has one column per class (transpose it)",
            lambda f: F.normalize(F.normalize(f, dim=-1).mean(dim=1), dim=-1),
        ),
        Mistake(WRONG_AXIS, _averaged_over(0)),
        Mistake(WRONG_AXIS, _averaged_over(2)),
    ],
)
