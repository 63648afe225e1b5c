"""Notebook 06's fill-in: the distribution the next image token is drawn from
(`mmlib.transformer.next_token_probs`: guidance, temperature, top-k, softmax)."""

from __future__ import annotations

import torch

from mmlib.exercises.core import Exercise, Mistake
from mmlib.transformer import next_token_probs, top_k_filter


def _logits(seed: int) -> tuple[torch.Tensor, torch.Tensor, float, float, int]:
    gen = torch.Generator().manual_seed(seed)
    uncond = 2 * torch.randn(4, 32, generator=gen)
    cond = uncond + torch.randn(4, 32, generator=gen)  # the caption moves some logits
    return cond, uncond, (3.0, 2.0, 4.0)[seed % 3], (0.8, 1.5, 0.6)[seed % 3], 8


def next_token_probs_of(cond_logits, uncond_logits, guidance, temperature, top_k):
    """mmlib's distribution, without top-p (the notebook's loop does not cut by it)."""
    return next_token_probs(cond_logits, uncond_logits, guidance, temperature, top_k)


def _keep_smallest(logits: torch.Tensor, k: int) -> torch.Tensor:
    kth = torch.topk(logits, k, largest=False).values[..., -1:]
    return logits.masked_fill(logits > kth, float("-inf"))


def _mixed_probabilities(c, u, g, t, k):
    p_c, p_u = top_k_filter(c / t, k).softmax(-1), top_k_filter(u / t, k).softmax(-1)
    return p_u + g * (p_c - p_u)


MIXED = "guidance mixes the logits, before the softmax, not the probabilities after it"

NEXT_TOKEN_PROBS = Exercise(
    name="next_token_probs_by_hand",
    where="mmlib.transformer.next_token_probs",
    reference=next_token_probs_of,
    inputs=_logits,
    mistakes=[
        Mistake(
            "guidance runs the wrong way round: uncond + guidance * (cond - uncond) moves away "
            "from the empty caption, towards the caption",
            lambda c, u, g, t, k: top_k_filter((c + g * (u - c)) / t, k).softmax(-1),
        ),
        Mistake(
            "the temperature multiplies the logits; it divides them (T < 1 sharpens)",
            lambda c, u, g, t, k: top_k_filter((u + g * (c - u)) * t, k).softmax(-1),
        ),
        Mistake(
            "top-k keeps the k smallest logits; keep the k largest (torch.topk's default)",
            lambda c, u, g, t, k: _keep_smallest((u + g * (c - u)) / t, k).softmax(-1),
        ),
        Mistake(
            "every token keeps some probability: set all but the top k logits to -inf",
            lambda c, u, g, t, k: ((u + g * (c - u)) / t).softmax(-1),
        ),
        Mistake(MIXED, _mixed_probabilities),
        Mistake(  # softmax first, then the right steps on the probabilities
            MIXED,
            lambda c, u, g, t, k: top_k_filter(
                (u.softmax(-1) + g * (c.softmax(-1) - u.softmax(-1))) / t, k
            ).softmax(-1),
        ),
    ],
)
