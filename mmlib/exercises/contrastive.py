"""Notebook 01's fill-in: the CLIP loss (`mmlib.contrastive.clip_loss`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmlib.contrastive import clip_loss
from mmlib.exercises.core import Exercise, Mistake


def _features(seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    gen = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(8, 16, generator=gen), dim=-1)
    text = F.normalize(image + torch.randn(8, 16, generator=gen), dim=-1)  # partly matching
    return image, text, 10.0


def _both(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(len(logits))
    return F.cross_entropy(logits, labels), F.cross_entropy(logits.T, labels)


CLIP_LOSS = Exercise(
    name="clip_loss_by_hand",
    where="mmlib.contrastive.clip_loss",
    reference=clip_loss,
    inputs=_features,
    mistakes=[
        Mistake(
            "the similarities are not multiplied by logit_scale (1 / temperature)",
            lambda i, t, s: sum(_both(i @ t.T)) / 2,
        ),
        Mistake(
            "logit_scale divides the similarities; it multiplies them (it is 1 / temperature)",
            lambda i, t, s: sum(_both(i @ t.T / s)) / 2,
        ),
        Mistake(
            "only the pictures choose a caption: average with the captions choosing a picture "
            "(the logits transposed)",
            lambda i, t, s: _both(s * i @ t.T)[0],
        ),
        Mistake(
            "the two cross-entropies are added; CLIP averages them (divide by 2)",
            lambda i, t, s: sum(_both(s * i @ t.T)),
        ),
        Mistake(
            "cross_entropy takes logits (it applies the softmax itself), not probabilities",
            lambda i, t, s: sum(_both((s * i @ t.T).softmax(-1))) / 2,
        ),
    ],
)
