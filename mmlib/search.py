"""Image search: a persistent, incremental, crash-safe index of CLIP embeddings, searched with text,
images or weighted combinations of both.

The index is a folder holding one SQLite database: a row per image (path, size, mtime, content
hash, float16 embedding), the model it was made with, and the files that were skipped and why.
Every batch of embeddings is committed in one transaction, so a build killed at any moment
leaves a consistent index, and the next build picks up where it stopped. Re-running a build
embeds only new or changed files; renamed or duplicate files reuse the stored vector of the
same content; deleted files are dropped.

Search is exact (one float16 matrix-vector product, then top-k) up to `FAISS_THRESHOLD` rows,
and approximate with a FAISS inverted-file index above it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from mmlib import __version__
from mmlib.clip import encode_images, encode_texts
from mmlib.env import MMLibError
from mmlib.images import IMAGE_SUFFIXES, ImageLoadError, load_image, scan_images

FAISS_THRESHOLD = 200_000  # rows above which search goes through FAISS
DB_NAME = "index.sqlite"


class ModelMismatchError(MMLibError):
    """The index was built with another model; its vectors cannot be compared with this one's."""


@dataclass
class Hit:
    """One search result."""

    path: str
    score: float
    rank: int


@dataclass
class BuildReport:
    """What a build did."""

    embedded: int
    reused: int
    unchanged: int
    removed: int
    skipped: list[tuple[str, str]]

    def __str__(self) -> str:
        lines = [
            f"embedded {self.embedded}, reused {self.reused} (renamed or duplicate), "
            f"unchanged {self.unchanged}, removed {self.removed}, "
            f"skipped {len(self.skipped)}"
        ]
        lines += [f"  skipped {p}: {why}" for p, why in self.skipped[:20]]
        if len(self.skipped) > 20:
            lines.append(f"  ... and {len(self.skipped) - 20} more (see ImageIndex.skipped())")
        return "\n".join(lines)


def model_id_of(clip) -> str:
    """Return a string naming the model of a `load_clip` result (name and weights)."""
    name, weights = getattr(clip, "name", None), getattr(clip, "weights", None)
    if name is None:
        raise ValueError("pass the result of load_clip, or give model_id= explicitly")
    return f"{name} | {weights}"


def file_hash(path: str | os.PathLike) -> str:
    """Return the BLAKE2b hash of a file's bytes (hex): equal content, equal hash."""
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Top-k search over a matrix of embeddings
# ---------------------------------------------------------------------------------------------


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


def precision_at_k(hits: Sequence[Hit], relevant) -> float:
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


# ---------------------------------------------------------------------------------------------
# The index
# ---------------------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime REAL NOT NULL, hash TEXT NOT NULL,
    vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS images_hash ON images (hash);
CREATE TABLE IF NOT EXISTS skipped (path TEXT PRIMARY KEY, size INTEGER, mtime REAL,
    reason TEXT NOT NULL);
"""


class ImageIndex:
    """A persistent image index in folder `root`, tied to one CLIP model.

    >>> clip = load_clip("mmlib:tiny-clip")
    >>> index = ImageIndex("my_index", clip)
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
        self.model_id = model_id or model_id_of(clip)
        self.batch_size, self.device = batch_size, device
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.root / DB_NAME, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._check_model()
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

    # -- bookkeeping ---------------------------------------------------------------------------

    def _check_model(self) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key='model_id'").fetchone()
        if row is None:
            self.db.execute("BEGIN")
            self.db.execute("INSERT INTO meta VALUES ('model_id', ?)", (self.model_id,))
            self.db.execute("INSERT INTO meta VALUES ('mmlib_version', ?)", (__version__,))
            self.db.execute("COMMIT")
        elif row[0] != self.model_id:
            raise ModelMismatchError(
                f"the index in {str(self.root)!r} was built with model {row[0]!r}, not "
                f"{self.model_id!r}: their embeddings cannot be mixed. Use the same model, or "
                f"rebuild: delete the folder {str(self.root)!r} (or use another one) and build again."
            )

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]

    def paths(self) -> list[str]:
        """Return the indexed paths, in row order."""
        return [r[0] for r in self.db.execute("SELECT path FROM images ORDER BY path")]

    def skipped(self) -> list[tuple[str, str]]:
        """Return [(path, reason)] of the files the last builds could not index."""
        return list(self.db.execute("SELECT path, reason FROM skipped ORDER BY path"))

    def close(self) -> None:
        self.db.close()

    # -- building ------------------------------------------------------------------------------

    def build(self, source, progress: bool = True, name: str = "dataset") -> BuildReport:
        """Index every image under folder `source` (recursively), or every item of a Dataset
        (rows named "`name`:index"); return what was done.

        Only what changed is embedded; rows of this source that disappeared are dropped (other
        folders in the same index are left alone). Hidden folders and non-image files are
        ignored; unreadable images are skipped with the reason recorded (see `skipped()`), and
        one bad file never stops a build.
        """
        if isinstance(source, (str, os.PathLike)):
            folder = Path(source)
            if not folder.is_dir():
                raise FileNotFoundError(f"no folder at {str(folder)!r} to index")
            found = {}
            for p in scan_images(folder):
                st = p.stat()
                found[str(p.resolve())] = (st.st_size, st.st_mtime)
            scope = str(folder.resolve()) + os.sep
            return self._build(found, scope, self._file_item, progress)
        if not (hasattr(source, "__getitem__") and hasattr(source, "__len__")):
            raise ValueError(f"source must be a folder or a Dataset, got {type(source).__name__}")
        items = {f"{name}:{i}": (i, -1.0) for i in range(len(source))}
        return self._build(items, f"{name}:", lambda key: self._dataset_item(source, key), progress)

    @staticmethod
    def _file_item(key: str):
        return file_hash(key), lambda: load_image(key)

    @staticmethod
    def _dataset_item(dataset, key: str):
        item = dataset[int(key.rsplit(":", 1)[1])]
        image = item[0] if isinstance(item, (tuple, list)) else item
        if isinstance(image, torch.Tensor):
            raw = image.detach().cpu().contiguous().numpy().tobytes()
        elif isinstance(image, Image.Image):
            raw = image.tobytes() + repr((image.mode, image.size)).encode()
        else:
            raise ImageLoadError(f"item {key} is a {type(image).__name__}, not an image")
        return hashlib.blake2b(raw, digest_size=20).hexdigest(), lambda: image

    def _build(self, found: dict, scope: str, fetch, progress: bool) -> BuildReport:
        rows_in_scope = self.db.execute(
            "SELECT path, size, mtime, hash FROM images WHERE substr(path, 1, ?) = ?",
            (len(scope), scope),
        )
        known = {r[0]: (r[1], r[2], r[3]) for r in rows_in_scope}
        bad = {r[0]: (r[1], r[2]) for r in self.db.execute("SELECT path, size, mtime FROM skipped")}
        is_file = scope.endswith(os.sep)
        # files: unchanged when size and mtime match; dataset items: when the content hash does
        todo = [
            k
            for k, st in found.items()
            if not is_file or (known.get(k, (None, None))[:2] != st and bad.get(k) != st)
        ]
        unchanged = sum(
            1 for k, st in found.items() if is_file and known.get(k, (None,) * 3)[:2] == st
        )
        embedded = reused = 0
        bar = tqdm(total=len(todo), desc="index images", unit="img", disable=not progress)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            rows, new, skips, items = [], [], [], {}
            for key in chunk:
                try:
                    items[key] = fetch(key)
                except (OSError, ImageLoadError) as err:
                    skips.append((key, *found[key], f"unreadable: {err}"))
            if not is_file:  # dataset items whose content is unchanged need nothing
                same = [
                    k for k, (digest, _) in items.items() if k in known and known[k][2] == digest
                ]
                unchanged += len(same)
                for k in same:
                    items.pop(k)
            marks = ",".join("?" * len(items))
            stored = dict(
                self.db.execute(
                    f"SELECT hash, vector FROM images WHERE hash IN ({marks})",
                    [d for d, _ in items.values()],
                )
            )
            for key, (digest, load) in items.items():
                size, mtime = found[key]
                vector = stored.get(digest)
                if vector is not None:  # renamed or duplicate content: reuse the vector
                    rows.append((key, size, mtime, digest, vector))
                    reused += 1
                    continue
                try:
                    new.append((key, size, mtime, digest, load()))
                except (ImageLoadError, FileNotFoundError) as err:
                    skips.append((key, size, mtime, str(err)))
            if new:
                feats = encode_images(
                    self.model,
                    self.preprocess,
                    [n[4] for n in new],
                    batch_size=self.batch_size,
                    device=self.device,
                    progress=False,
                )
                vectors = feats.half().numpy()
                rows += [
                    (k, s, m, h, vectors[i].tobytes()) for i, (k, s, m, h, _) in enumerate(new)
                ]
                embedded += len(new)
            self.db.execute("BEGIN")  # one transaction per batch: all of it is kept, or none
            self.db.executemany("INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?)", rows)
            self.db.executemany("DELETE FROM skipped WHERE path=?", [(r[0],) for r in rows])
            self.db.executemany("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, ?)", skips)
            self.db.execute("COMMIT")
            bar.update(len(chunk))
        bar.close()
        gone = [(k,) for k in known if k not in found]
        self.db.execute("BEGIN")
        self.db.executemany("DELETE FROM images WHERE path=?", gone)
        self.db.executemany(
            "DELETE FROM skipped WHERE path=?",
            [(k,) for k in bad if k.startswith(scope) and k not in found],
        )
        self.db.execute("COMMIT")
        self._cache, self._faiss = None, None
        report = BuildReport(embedded, reused, unchanged, len(gone), self.skipped())
        if progress:
            print(report)
        return report

    # -- searching -----------------------------------------------------------------------------

    def matrix(self) -> tuple[list[str], torch.Tensor]:
        """Return (paths, float16 embedding matrix (N, D)), loaded once and cached."""
        if self._cache is None:
            rows = list(self.db.execute("SELECT path, vector FROM images ORDER BY path"))
            if not rows:
                raise ValueError(f"the index in {str(self.root)!r} is empty: build it first")
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16)
            self._cache = (
                [r[0] for r in rows],
                torch.from_numpy(vectors.reshape(len(rows), -1).copy()),
            )
        return self._cache

    def query_vector(self, query) -> torch.Tensor:
        """Return the normalised embedding of a query.

        A query is a text, an image (PIL image or path), or a list of (query, weight) pairs
        whose embeddings are summed with their weights ("beach" + "sunset" - "people").
        """
        if (
            isinstance(query, (list, tuple))
            and query
            and all(isinstance(q, (list, tuple)) and len(q) == 2 for q in query)
        ):
            total = 0
            for part, weight in query:
                if not isinstance(weight, (int, float)):
                    raise ValueError(f"weight {weight!r} of {part!r} is not a number")
                total = total + float(weight) * self.query_vector(part)
            norm = torch.linalg.vector_norm(total)
            if norm < 1e-8:
                raise ValueError("the weighted query adds up to nothing (all weights cancel)")
            return total / norm
        if (
            isinstance(query, str)
            and query.strip()
            and Path(query).suffix.lower() not in IMAGE_SUFFIXES
        ):
            return encode_texts(
                self.model, self.tokenizer, [query], device=self.device, progress=False
            )[0]
        if isinstance(query, (str, os.PathLike, Image.Image)):
            if isinstance(query, str) and not query.strip():
                raise ValueError("the query is empty: type some text or give an image")
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
        meta = dict(self.db.execute("SELECT key, value FROM meta"))
        return {"images": len(self), "skipped": len(self.skipped()), **meta, "root": str(self.root)}


def parse_query(text: str):
    """Return a query from command-line text: plain text, or weighted parts separated by commas,
    "a beach:1, a sunset:1, people:-1" (a part without a weight counts 1)."""
    text = text.strip()
    if not text:
        raise ValueError("the query is empty")
    if ":" not in text:
        return text
    parts = []
    for chunk in text.split(","):
        words, colon, weight = chunk.strip().rpartition(":")
        if not colon:
            words, weight = chunk.strip(), "1"
        try:
            parts.append((words.strip(), float(weight)))
        except ValueError:
            raise ValueError(f"weight {weight!r} in {chunk.strip()!r} is not a number") from None
        if not words.strip():
            raise ValueError(f"part {chunk.strip()!r} has a weight but no words")
    return parts


def contact_sheet(
    hits: Sequence[Hit], out: str | os.PathLike, title: str = "", thumb: int = 96
) -> Path:
    """Write a PNG of the hits' thumbnails with rank and score; return its path."""
    from mmlib.plots import image_grid

    if not hits:
        raise ValueError("no hits to draw")
    images = [load_image(h.path).resize((thumb, thumb)) for h in hits]
    fig = image_grid(images, [f"#{h.rank + 1}  {h.score:.3f}" for h in hits], ncols=5, title=title)
    out = Path(out)
    fig.savefig(out, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out
