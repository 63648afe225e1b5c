"""Image search: a persistent, incremental, crash-safe index of CLIP embeddings, searched with text,
images or weighted combinations of both.

The index is a folder holding one SQLite database: a row per image (path, size, change stamp,
content hashes, float16 embedding), the fingerprint of the model's weights it was made with,
and the files that were skipped and why. Every batch is committed in one transaction (rolled
back whole when it fails), so a build killed at any moment leaves a consistent index, and the
next build picks up where it stopped. Re-running a build embeds only new or changed files;
renamed or duplicate files reuse the stored vector of the same content; deleted files are
dropped.

What counts as changed (`ImageIndex.build`): a file whose size, modification time or change
time (ctime: any write or chmod sets it, and nobody can set it back) differ is fingerprinted
again (its size and its first, middle and last 64 KiB); a different fingerprint means a new
content hash and a new vector. So every change made through the file system is seen, a touch
alone re-embeds nothing. On Windows, where ctime is the creation time, every file is
fingerprinted at every build, which still sees any change to a small file (up to 192 KiB: the
fingerprint covers all of it) but not one that keeps a large file's size, times and sampled
bytes.

Search is exact (one float16 matrix-vector product, then top-k) up to `FAISS_THRESHOLD` rows,
and approximate with a FAISS inverted-file index above it.
"""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from mmlib import __version__
from mmlib.clip import encode_images, encode_texts
from mmlib.env import MMLibError
from mmlib.images import (
    IMAGE_SUFFIXES,
    ImageFile,
    ImageLoadError,
    display_path,
    file_hash,
    fingerprint,
    load_image,
    scan_images,
)
from mmlib.nearest import FaissSearcher, exact_topk

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


def _reason(err: BaseException) -> str:
    return getattr(err, "strerror", None) or str(err)


def _dataset_item(dataset, key: str) -> tuple[str, object]:
    """Return (content hash, image) of item `key` ("name:index") of a Dataset."""
    item = dataset[int(key.rsplit(":", 1)[1])]
    image = item[0] if isinstance(item, (tuple, list)) else item
    if isinstance(image, torch.Tensor):
        raw = image.detach().cpu().contiguous().numpy().tobytes()
    elif isinstance(image, Image.Image):
        raw = image.tobytes() + repr((image.mode, image.size)).encode()
    else:
        raise ImageLoadError(f"item {key} is a {type(image).__name__}, not an image")
    return hashlib.blake2b(raw, digest_size=20).hexdigest(), image


def model_fingerprint(model: torch.nn.Module) -> str:
    """Return a hash of a model's weights: the same weights under any name give the same one."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def db_key(path: str) -> str:
    """Return how a path is stored: as itself, with '%' and any byte that is not UTF-8 (a
    surrogate from os.fsdecode) written as %XX, so every file name is stored losslessly."""
    out = []
    for ch in path:
        if ch == "%":
            out.append("%25")
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"%{ord(ch) - 0xDC00:02X}")
        else:
            out.append(ch)
    return "".join(out)


def path_of(key: str) -> str:
    """Return the path a stored key stands for (the inverse of `db_key`)."""
    if "%" not in key:
        return key
    parts = key.split("%")
    out = [parts[0]]
    for part in parts[1:]:
        byte = int(part[:2], 16)
        out.append(("%" if byte == 0x25 else chr(0xDC00 + byte)) + part[2:])
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# The index
# ---------------------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, stamp TEXT NOT NULL, quick TEXT NOT NULL,
    hash TEXT NOT NULL, vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS images_hash ON images (hash);
CREATE TABLE IF NOT EXISTS skipped (path TEXT PRIMARY KEY, stamp TEXT NOT NULL,
    reason TEXT NOT NULL);
"""
SCHEMA_VERSION = "2"


class ImageRow(NamedTuple):
    """One row of the images table, its fields in the table's column order."""

    path: str  # `db_key` of the file's path, or "name:index" for a Dataset's item
    size: int  # 0 for a Dataset's item
    stamp: str  # `ImageFile.stamp()` when its content was last checked ("" for a Dataset's)
    quick: str  # the file's `fingerprint` (a Dataset's item: its content hash)
    hash: str  # the content hash: rows with the same one share a vector
    vector: bytes | None = None  # the float16 embedding; None where it was not read


class SkippedRow(NamedTuple):
    """One row of the skipped table, its fields in the table's column order."""

    path: str
    stamp: str  # the entry's stamp when it failed: it is tried again once that changes
    reason: str


class ImageIndex:
    """A persistent image index in folder `root`, tied to one CLIP model's weights.

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
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.root = Path(root)
        self.model, self.preprocess, self.tokenizer = clip
        self.model_name = getattr(clip, "name", type(self.model).__name__)
        self.model_id = model_id or "weights:" + model_fingerprint(self.model)
        self.batch_size, self.device = batch_size, device
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.root / DB_NAME, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._check_schema()
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

    def _check_schema(self) -> None:
        columns = [name for _, name, *_ in self.db.execute("PRAGMA table_info(images)")]
        if columns and "stamp" not in columns:
            self.db.close()
            raise ModelMismatchError(
                f"the index in {str(self.root)!r} was made by an older mmlib; delete the folder "
                f"{str(self.root)!r} (or use another one) and build again"
            )

    def _check_model(self) -> None:
        meta = dict(self.db.execute("SELECT key, value FROM meta"))
        if "model_id" not in meta:
            with self._transaction():
                for key, value in (
                    ("model_id", self.model_id),
                    ("model_name", self.model_name),
                    ("mmlib_version", __version__),
                    ("schema", SCHEMA_VERSION),
                ):
                    self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        elif meta["model_id"] != self.model_id:
            raise ModelMismatchError(
                f"the index in {str(self.root)!r} was built with other model weights "
                f"({meta.get('model_name', '?')}, {meta['model_id']}) than these "
                f"({self.model_name}, {self.model_id}): their embeddings cannot be mixed. Use "
                f"the same model, or delete the folder {str(self.root)!r} (or use another one) "
                f"and build again."
            )

    @contextmanager
    def _transaction(self):
        """All the statements inside, or none of them (rolled back on any error)."""
        self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]

    def paths(self) -> list[str]:
        """Return the indexed paths, in row order."""
        return [path_of(key) for (key,) in self.db.execute("SELECT path FROM images ORDER BY path")]

    def skipped(self) -> list[tuple[str, str]]:
        """Return [(path, reason)] of the files and folders the builds could not index."""
        rows = self.db.execute("SELECT path, reason FROM skipped ORDER BY path")
        return [(path_of(k), why) for k, why in rows]

    def close(self) -> None:
        self.db.close()

    # -- building ------------------------------------------------------------------------------

    def build(self, source, progress: bool = True, name: str = "dataset") -> BuildReport:
        """Index every image under folder `source` (recursively), or every item of a Dataset
        (rows named "`name`:index"); return what was done.

        Only what changed is embedded (see the module's docstring for what counts as a change);
        rows of this source that disappeared are dropped, other folders in the same index are
        left alone, and a folder deleted as a whole is removed from the index. Hidden folders
        and non-image files are ignored. Anything that cannot be indexed (an unreadable file or
        folder, a broken link, a FIFO, a decompression bomb) is skipped with the reason recorded
        (`skipped()`) and tried again when it may have changed; one bad entry never stops a
        build. Pictures are reduced as they are decoded, so a batch's memory stays bounded.
        """
        if isinstance(source, (str, os.PathLike)):
            folder = Path(source).absolute()
            scope = db_key(str(folder.resolve() if folder.exists() else folder) + os.sep)
            if not folder.is_dir():
                gone = self._rows_in(scope)
                if not gone or folder.exists():
                    raise FileNotFoundError(f"no folder at {display_path(folder)!r} to index")
                return self._finish(scope, set(), 0, 0, 0, progress)  # it was deleted
            files, problems = scan_images(folder.resolve())
            return self._build_files(files, problems, scope, progress)
        if not (hasattr(source, "__getitem__") and hasattr(source, "__len__")):
            raise ValueError(f"source must be a folder or a Dataset, got {type(source).__name__}")
        return self._build_dataset(source, f"{name}:", progress)

    def _rows_in(self, scope: str) -> dict[str, ImageRow]:
        """Return {path: row, its vector not read} of the images whose path starts with `scope`."""
        rows = self.db.execute(
            "SELECT path, size, stamp, quick, hash FROM images WHERE substr(path, 1, ?) = ?",
            (len(scope), scope),
        )
        return {row.path: row for row in (ImageRow(*r) for r in rows)}

    def _skipped_in(self, scope: str) -> dict[str, str]:
        rows = self.db.execute(
            "SELECT path, stamp FROM skipped WHERE substr(path, 1, ?) = ?", (len(scope), scope)
        )
        return dict(rows)

    def _build_files(self, files: list[ImageFile], problems, scope: str, progress) -> BuildReport:
        known, bad = self._rows_in(scope), self._skipped_in(scope)
        always = os.name == "nt"  # Windows' ctime is the creation time: fingerprint every file
        todo, touched, unchanged = [], [], 0
        for f in files:
            key = db_key(f.path)
            if key in known:
                if known[key].stamp == f.stamp() and not always:
                    unchanged += 1
                    continue
                try:
                    now = fingerprint(f.path)
                except (OSError, ImageLoadError):
                    now = None
                if now == known[key].quick and now is not None:  # touched, not changed
                    touched.append((f.stamp(), key))
                    unchanged += 1
                    continue
            elif bad.get(key) == f.stamp():
                continue  # skipped before and not changed since
            todo.append(f)
        skips = [SkippedRow(db_key(path), "", why) for path, why in problems]
        embedded = reused = 0
        with self._transaction():
            self.db.executemany("UPDATE images SET stamp=? WHERE path=?", touched)
            self.db.executemany("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?)", skips)
        bar = tqdm(total=len(todo), desc="index images", unit="img", disable=not progress)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            items, skips = [], []
            for f in chunk:
                try:
                    items.append((f, fingerprint(f.path), file_hash(f.path)))
                except (OSError, ImageLoadError) as err:
                    skips.append(
                        SkippedRow(db_key(f.path), f.stamp(), f"unreadable: {_reason(err)}")
                    )
            e, r = self._store(items, skips, lambda f: load_image(f.path, max_side=self._side()))
            embedded, reused = embedded + e, reused + r
            bar.update(len(chunk))
        bar.close()
        seen = {db_key(f.path) for f in files} | {db_key(path) for path, _ in problems}
        return self._finish(scope, seen, embedded, reused, unchanged, progress)

    def _side(self) -> int:
        """Return the side pictures are reduced to while decoding: twice the model's input."""
        size = getattr(self.model.visual, "image_size", 224)
        return 2 * max(size if isinstance(size, int) else max(size), 32)

    def _store(self, items, skips, load) -> tuple[int, int]:
        """Embed (or reuse the vectors of) `items` [(entry, quick, hash)] and write them and
        `skips` (SkippedRows) in one transaction; return (embedded, reused)."""
        marks = ",".join("?" * len(items))
        stored = dict(
            self.db.execute(
                f"SELECT hash, vector FROM images WHERE hash IN ({marks})",
                [digest for _, _, digest in items],
            )
        )
        rows, new = [], []
        for entry, quick, digest in items:
            row = ImageRow(*self._describe(entry), quick, digest)
            if digest in stored:  # renamed or duplicate content: reuse the vector
                rows.append(row._replace(vector=stored[digest]))
                continue
            try:
                new.append((row, load(entry)))
            except (OSError, ImageLoadError) as err:
                skips.append(SkippedRow(row.path, row.stamp, _reason(err)))
        reused = len(rows)
        if new:
            feats = encode_images(
                self.model,
                self.preprocess,
                [image for _, image in new],
                batch_size=self.batch_size,
                device=self.device,
                progress=False,
            )
            vectors = feats.half().numpy()
            rows += [
                row._replace(vector=v.tobytes()) for (row, _), v in zip(new, vectors, strict=True)
            ]
        with self._transaction():  # one transaction per batch: all of it is kept, or none
            self.db.executemany("INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?, ?)", rows)
            self.db.executemany("DELETE FROM skipped WHERE path=?", [(r.path,) for r in rows])
            self.db.executemany("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?)", skips)
        return len(new), reused

    @staticmethod
    def _describe(entry) -> tuple[str, int, str]:
        """Return (path, size, stamp) of an ImageFile or a Dataset's (key, image), as stored."""
        if isinstance(entry, ImageFile):
            return db_key(entry.path), entry.size, entry.stamp()
        key, _ = entry
        return key, 0, ""

    def _build_dataset(self, dataset, scope: str, progress: bool) -> BuildReport:
        known = self._rows_in(scope)
        embedded = reused = unchanged = 0
        keys = [f"{scope}{i}" for i in range(len(dataset))]
        bar = tqdm(total=len(keys), desc="index images", unit="img", disable=not progress)
        for start in range(0, len(keys), self.batch_size):
            items, skips = [], []
            for key in keys[start : start + self.batch_size]:
                try:
                    digest, image = _dataset_item(dataset, key)
                except (OSError, ImageLoadError, ValueError) as err:
                    skips.append(SkippedRow(key, "", f"unreadable: {_reason(err)}"))
                    continue
                if key in known and known[key].hash == digest:
                    unchanged += 1
                else:
                    items.append(((key, image), digest, digest))
            e, r = self._store(items, skips, lambda entry: entry[1])
            embedded, reused = embedded + e, reused + r
            bar.update(min(self.batch_size, len(keys) - start))
        bar.close()
        return self._finish(scope, set(keys), embedded, reused, unchanged, progress)

    def _finish(self, scope, seen, embedded, reused, unchanged, progress) -> BuildReport:
        gone = [(k,) for k in self._rows_in(scope) if k not in seen]
        stale = [(k,) for k in self._skipped_in(scope) if k not in seen]
        with self._transaction():
            self.db.executemany("DELETE FROM images WHERE path=?", gone)
            self.db.executemany("DELETE FROM skipped WHERE path=?", stale)
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
            vectors = np.frombuffer(b"".join(vector for _, vector in rows), dtype=np.float16)
            self._cache = (
                [path_of(key) for key, _ in rows],
                torch.from_numpy(vectors.reshape(len(rows), -1).copy()),
            )
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
        meta = dict(self.db.execute("SELECT key, value FROM meta"))
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
