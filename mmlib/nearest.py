"""Finding the k nearest vectors: exact top-k (one float16 matrix product), approximate top-k
with a FAISS inverted-file index, and how to measure them (precision@k, recall@k).

`mmlib.search` uses these over an image index; notebook 03 compares them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def exact_topk(
    matrix: torch.Tensor, queries: torch.Tensor, k: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (scores, indices) of the k rows of `matrix` most similar to each query (dot product).

    One matrix product in the matrix's own dtype (float16 stays float16: half the memory
    traffic), then torch.topk. `queries` is (D,) or (Q, D).
    """
    single = queries.ndim == 1
    if single:  # matrix-vector: the matrix is read once, in float16
        scores = torch.mv(matrix, queries.to(matrix.dtype)).float()[None]
    else:
        scores = (matrix @ queries.to(matrix.dtype).T).T.float()  # (Q, N)
    top = scores.topk(min(k, matrix.shape[0]), dim=1)
    return (top.values[0], top.indices[0]) if single else (top.values, top.indices)


class FaissSearcher:
    """Approximate top-k with a FAISS inverted-file index (float16 storage, inner product)."""

    def __init__(
        self,
        matrix: torch.Tensor | np.ndarray,
        nlist: int | None = None,
        nprobe: int = 16,
        seed: int = 0,
    ):
        import faiss

        data = np.ascontiguousarray(np.asarray(matrix, dtype=np.float32))
        n, d = data.shape
        nlist = nlist or max(1, min(4096, int(np.sqrt(n))))  # ~1000 lists for 1M vectors
        quantizer = faiss.IndexFlatIP(d)
        self.index = faiss.IndexIVFScalarQuantizer(
            quantizer, d, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        )
        rng = np.random.default_rng(seed)
        sample = data[rng.choice(n, size=min(n, max(nlist * 40, 10_000)), replace=False)]
        self.index.train(sample)
        self.index.add(data)
        self.index.nprobe = nprobe

    def search(self, queries, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).reshape(-1, self.index.d))
        scores, idx = self.index.search(q, k)
        return torch.from_numpy(scores), torch.from_numpy(idx)


def precision_at_k(hits: Sequence, relevant) -> float:
    """Return the fraction of `hits` for which `relevant(path)` is true."""
    if not hits:
        raise ValueError("no hits: precision@k needs at least one result")
    return sum(bool(relevant(h.path)) for h in hits) / len(hits)


def recall_at_k(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """Return the mean fraction of each query's exact top-k found in its approximate top-k."""
    hits = [
        len(set(a.tolist()) & set(e.tolist())) / len(e) for a, e in zip(approx, exact, strict=True)
    ]
    return float(np.mean(hits))
