"""Image search: embed every picture of a collection once with CLIP, then answer a query (a
text, an image, or a weighted combination: "a beach" + "a sunset" - "people") with the pictures
whose embeddings are closest to the query's.

`ImageIndex` is that idea: a matrix of normalised image embeddings, a query vector, and the
top k of their dot products (exact up to `FAISS_THRESHOLD` rows, approximate with a FAISS
inverted-file index above it; `mmlib.nearest`). Keeping the matrix on disk, up to date and safe
against a crash is `mmlib.store.image_index`'s bookkeeping: a build embeds only new or changed
files, and a killed build loses nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mmlib.clip import encode_images, encode_texts
from mmlib.images import IMAGE_SUFFIXES, ImageLoadError, load_image
from mmlib.nearest import FaissSearcher, exact_topk
from mmlib.store.image_index import (
    DB_NAME,
    BuildReport,
    IndexStore,
    ModelMismatchError,
    model_fingerprint,
)

__all__ = ["FAISS_THRESHOLD", "Hit", "ImageIndex", "ModelMismatchError", "contact_sheet"]

FAISS_THRESHOLD = 200_000  # rows above which search goes through FAISS


@dataclass
class Hit:
    """One search result."""

    path: str
    score: float
    rank: int


class ImageIndex:
    """An image index in folder `root`, tied to one CLIP model's weights.

    >>> index = ImageIndex("my_index", zoo.get_clip())
    >>> index.build("photos/")            # again later: only new/changed files are embedded
    >>> index.search("a purple star", k=5)
    """

    def __init__(
        self,
        root: str | os.PathLike,
        clip,
        model_id: str | None = None,
        batch_size: int = 64,
        device=None,
    ):
        self.root = Path(root)
        self.model, self.preprocess, self.tokenizer = clip
        self.batch_size, self.device = batch_size, device
        size = getattr(self.model.visual, "image_size", 224)  # decode at twice the model's input
        self.store = IndexStore(
            self.root,
            model_id or "weights:" + model_fingerprint(self.model),
            getattr(clip, "name", type(self.model).__name__),
            embed=self.embed,
            side=2 * max(size if isinstance(size, int) else max(size), 32),
            batch_size=batch_size,
        )
        self._cache: tuple[list[str], torch.Tensor] | None = None
        self._faiss: FaissSearcher | None = None

    @classmethod
    def open(cls, root: str | os.PathLike, clip, **kwargs) -> ImageIndex:
        """Return the index already built in `root`, for searching; a folder without one is an
        error that says how to build it (a mistyped path must not become a new empty index)."""
        root = Path(root)
        if not (root / DB_NAME).is_file():
            raise FileNotFoundError(
                f"no image index in {str(root)!r}: build one with `mmlib search index FOLDER "
                f"--index {root}`, or check the --index path"
            )
        return cls(root, clip, **kwargs)

    def embed(self, images: list) -> np.ndarray:
        """Return the normalised CLIP embeddings of pictures as float16 rows (N, D)."""
        feats = encode_images(
            self.model,
            self.preprocess,
            images,
            batch_size=self.batch_size,
            device=self.device,
            progress=False,
        )
        return feats.half().numpy()

    def build(self, source, progress: bool = True, name: str = "dataset") -> BuildReport:
        """Index every image under folder `source` (recursively), or every item of a Dataset
        (rows named "`name`:index"); return what was done (`IndexStore.build` says how only
        what changed is embedded, and what is skipped and why)."""
        report = self.store.build(source, progress=progress, name=name)
        self._cache, self._faiss = None, None
        return report

    def __len__(self) -> int:
        return len(self.store)

    def paths(self) -> list[str]:
        """Return the indexed paths, in row order."""
        return self.store.paths()

    def skipped(self) -> list[tuple[str, str]]:
        """Return [(path, reason)] of the files and folders the builds could not index."""
        return self.store.skipped()

    def close(self) -> None:
        self.store.close()

    def matrix(self) -> tuple[list[str], torch.Tensor]:
        """Return (paths, float16 embedding matrix (N, D)), loaded once and cached."""
        if self._cache is None:
            paths, vectors = self.store.vectors()
            if not paths:
                raise ValueError(f"the index in {str(self.root)!r} is empty: build it first")
            self._cache = (paths, torch.from_numpy(vectors))
        return self._cache

    def query_vector(self, query) -> torch.Tensor:
        """Return the normalised embedding of a query.

        A query is a text, an image (PIL image or path), or a list of (query, weight) pairs
        whose embeddings are summed with their weights ("beach" + "sunset" - "people"). A string
        is an image only when it names an existing file (or looks like a path: then a missing
        file is an error); "a screenshot.png" with no such file is text.
        """
        if (
            isinstance(query, (list, tuple))
            and query
            and all(isinstance(q, (list, tuple)) and len(q) == 2 for q in query)
        ):
            total = 0
            for part, weight in query:
                if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                    raise ValueError(f"weight {weight!r} of {part!r} is not a number")
                if not math.isfinite(weight):
                    raise ValueError(f"weight {weight!r} of {part!r} must be a finite number")
                total = total + float(weight) * self.query_vector(part)
            norm = torch.linalg.vector_norm(total)
            if norm < 1e-8:
                raise ValueError("the weighted query adds up to nothing (all weights cancel)")
            return total / norm
        if isinstance(query, str):
            if not query.strip():
                raise ValueError("the query is empty: type some text or give an image")
            if not _is_image_path(query):
                return encode_texts(
                    self.model, self.tokenizer, [query], device=self.device, progress=False
                )[0]
        if isinstance(query, (str, os.PathLike, Image.Image)):
            return encode_images(
                self.model, self.preprocess, [query], device=self.device, progress=False
            )[0]
        raise ValueError(
            f"a query is a text, an image (PIL image or path) or a list of (query, weight) "
            f"pairs; got {type(query).__name__}"
        )

    def search(self, query, k: int = 10, method: str = "auto") -> list[Hit]:
        """Return the k best matches of `query` (see `query_vector`), best first.

        `method` is "exact", "faiss" or "auto" (FAISS above FAISS_THRESHOLD images).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        paths, matrix = self.matrix()
        q = self.query_vector(query)
        if not torch.isfinite(q).all():
            raise ValueError(f"the query {query!r} gives no usable vector (not finite)")
        use_faiss = method == "faiss" or (method == "auto" and len(paths) > FAISS_THRESHOLD)
        if method not in ("auto", "exact", "faiss"):
            raise ValueError(f"method={method!r}; choose 'auto', 'exact' or 'faiss'")
        if use_faiss:
            if self._faiss is None:
                self._faiss = FaissSearcher(matrix)
            scores, idx = self._faiss.search(q, k)
            scores, idx = scores[0], idx[0]
        else:
            scores, idx = exact_topk(matrix, q, k)
        return [
            Hit(paths[i], float(s), r)
            for r, (s, i) in enumerate(zip(scores.tolist(), idx.tolist(), strict=True))
            if i >= 0
        ]

    def near_duplicates(
        self, threshold: float = 0.97, limit: int = 50
    ) -> list[tuple[str, str, float]]:
        """Return pairs of different files whose embeddings are at least `threshold` similar."""
        paths, matrix = self.matrix()
        m = matrix.float()
        pairs = []
        for start in range(0, len(paths), 1024):
            sims = m[start : start + 1024] @ m.T
            rows, cols = torch.nonzero(sims >= threshold, as_tuple=True)
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                if start + r < c:
                    pairs.append((paths[start + r], paths[c], float(sims[r, c])))
        return sorted(pairs, key=lambda t: -t[2])[:limit]

    def info(self) -> dict:
        """Return the index's size, model and skipped count."""
        meta = self.store.meta()
        return {"images": len(self), "skipped": len(self.skipped()), **meta, "root": str(self.root)}


def _is_image_path(text: str) -> bool:
    """Return True when a query string is meant as an image file (see `query_vector`)."""
    if Path(text).suffix.lower() not in IMAGE_SUFFIXES:
        return False
    if Path(text).expanduser().is_file():
        return True
    if os.sep in text or (os.altsep and os.altsep in text) or text.startswith(("~", ".")):
        raise FileNotFoundError(f"no image at {text!r} (a query that looks like a path)")
    return False


def parse_query(text: str):
    """Return a query from command-line text: plain text, or weighted parts separated by commas,
    "a beach:1, a sunset:1, people:-1" (a part without a weight counts 1).

    A part's last ":number" is its weight only when the character before the colon is not a
    digit, so "time: 10:30" stays text; a weight must be a finite number (no nan, no inf).
    """
    text = text.strip()
    if not text:
        raise ValueError("the query is empty")
    parts, weighted = [], False
    for chunk in text.split(","):
        chunk = chunk.strip()
        words, colon, raw = chunk.rpartition(":")
        weight = None
        if colon and words and not words[-1].isdigit():
            try:
                weight = float(raw)
            except ValueError:
                weight = None
                if raw.strip() and raw.strip()[0] in "+-.0123456789":
                    raise ValueError(
                        f"weight {raw.strip()!r} in {chunk!r} is not a number"
                    ) from None
        if weight is not None and not math.isfinite(weight):
            raise ValueError(f"the weight in {chunk!r} is {raw.strip()}; give a finite number")
        if weight is None:
            words, weight = chunk, 1.0
        else:
            weighted = True
        if not words.strip():
            raise ValueError(f"part {chunk!r} has a weight but no words")
        parts.append((words.strip(), weight))
    if not weighted and len(parts) == 1:
        return parts[0][0]
    return parts


def contact_sheet(
    hits: Sequence[Hit], out: str | os.PathLike, title: str = "", thumb: int = 96
) -> Path:
    """Write a PNG of the hits' thumbnails with rank and score (a grey tile for a file that is
    gone or unreadable now); return its path."""
    import matplotlib.pyplot as plt

    from mmlib.plots import image_grid

    if not hits:
        raise ValueError("no hits to draw")
    images, titles = [], []
    for h in hits:
        try:
            images.append(load_image(h.path, max_side=4 * thumb).resize((thumb, thumb)))
            titles.append(f"#{h.rank + 1}  {h.score:.3f}")
        except (OSError, ImageLoadError):
            images.append(Image.new("RGB", (thumb, thumb), (128, 128, 128)))
            titles.append(f"#{h.rank + 1}  (file gone)")
    fig = image_grid(images, titles, ncols=5, title=title)
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
