"""Notebook 03's fill-in: exact top-k search (`mmlib.nearest.exact_topk`, which
`ImageIndex.search` runs on its normalised query)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmlib.exercises.core import Exercise, Mistake
from mmlib.nearest import exact_topk


def exact_search(query: torch.Tensor, vectors: torch.Tensor, k: int):
    """Return mmlib's exact search as `ImageIndex.search` runs it: the query normalised (as
    `query_vector` returns it), then `exact_topk` over the index's rows."""
    return exact_topk(vectors, F.normalize(query, dim=-1), k)


def _index(seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    # the query is not of length 1 (a weighted sum of queries is not), the rows are
    gen = torch.Generator().manual_seed(seed)
    vectors = F.normalize(torch.randn(40, 8, generator=gen), dim=-1)
    return 3.0 * torch.randn(8, generator=gen), vectors, 5


def _ranked(query, vectors, k, take="best first", normalise=True):
    """(scores, rows) of the k rows `take` names: "best first", "best last" or "worst"."""
    scores = vectors @ (F.normalize(query, dim=-1) if normalise else query)
    ascending = scores.argsort()
    rows = {"best first": ascending[-k:].flip(0), "best last": ascending[-k:]}.get(
        take, ascending[:k]
    )
    return scores[rows], rows


TOP_K = Exercise(
    name="top_k_by_hand",
    where="mmlib.nearest.exact_topk",
    reference=exact_search,
    inputs=_index,
    mistakes=[
        Mistake(
            "these are the k worst rows: sort the scores in descending order (largest first)",
            lambda q, v, k: _ranked(q, v, k, take="worst"),
        ),
        Mistake(
            "the right k rows, but the worst of them first: the best row comes first",
            lambda q, v, k: _ranked(q, v, k, take="best last"),
        ),
        Mistake(
            "the scores are not cosines: normalise the query to length 1 before the dot products",
            lambda q, v, k: _ranked(q, v, k, normalise=False),
        ),
        Mistake(
            "the rows come before the scores: return (scores, rows)",
            lambda q, v, k: _ranked(q, v, k)[::-1],
        ),
        Mistake(
            "only the rows are returned: return the scores too, as (scores, rows)",
            lambda q, v, k: _ranked(q, v, k)[1],
        ),
    ],
)
