"""The image index on disk: one SQLite database in a folder, kept up to date incrementally and
safe against a crash at any moment. `mmlib.search.ImageIndex` is the lesson (a query vector
against a matrix of embeddings); this is the bookkeeping under it.

The database holds a row per image (path, size, change stamp, content hashes, float16
embedding), the fingerprint of the model's weights it was made with, and the files that were
skipped and why. Every batch is committed in one transaction (rolled back whole when it fails),
so a build killed at any moment leaves a consistent index, and the next build picks up where it
stopped. Re-running a build embeds only new or changed files; renamed or duplicate files reuse
the stored vector of the same content; deleted files are dropped.

What counts as changed (`IndexStore.build`): a file whose size, modification time or change
time (ctime: any write or chmod sets it, and nobody can set it back) differ is fingerprinted
again (its size and its first, middle and last 64 KiB); a different fingerprint means a new
content hash and a new vector. So every change made through the file system is seen, a touch
alone re-embeds nothing. On Windows, where ctime is the creation time, every file is
fingerprinted at every build, which still sees any change to a small file (up to 192 KiB: the
fingerprint covers all of it) but not one that keeps a large file's size, times and sampled
bytes.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from mmlib import __version__
from mmlib.env import MMLibError
from mmlib.images import (
    ImageFile,
    ImageLoadError,
    display_path,
    file_hash,
    fingerprint,
    load_image,
    scan_images,
)

DB_NAME = "index.sqlite"


class ModelMismatchError(MMLibError):
    """The index was built with another model; its vectors cannot be compared with this one's."""


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
            lines.append(f"  ... and {len(self.skipped) - 20} more (see the index's skipped())")
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


class IndexStore:
    """The SQLite database of an image index in folder `root`, tied to one model's weights
    (`model_id`). `build` brings it up to date: pictures are decoded reduced to `side` pixels
    and embedded `batch_size` at a time by `embed` (pictures -> float16 rows (N, D))."""

    def __init__(
        self,
        root: str | os.PathLike,
        model_id: str,
        model_name: str,
        embed: Callable[[list], np.ndarray],
        side: int,
        batch_size: int = 64,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.root = Path(root)
        self.model_id, self.model_name = model_id, model_name
        self.embed, self.side, self.batch_size = embed, side, batch_size
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.root / DB_NAME, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._check_schema()
        self.db.executescript(SCHEMA)
        self._check_model()

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

    def meta(self) -> dict[str, str]:
        """Return what the index records about itself: its model, mmlib version and schema."""
        return dict(self.db.execute("SELECT key, value FROM meta"))

    def vectors(self) -> tuple[list[str], np.ndarray]:
        """Return (paths, float16 embeddings (N, D)) of every indexed image, in path order."""
        rows = list(self.db.execute("SELECT path, vector FROM images ORDER BY path"))
        if not rows:
            return [], np.zeros((0, 0), dtype=np.float16)
        vectors = np.frombuffer(b"".join(vector for _, vector in rows), dtype=np.float16)
        return [path_of(key) for key, _ in rows], vectors.reshape(len(rows), -1).copy()

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
            e, r = self._store(items, skips, lambda f: load_image(f.path, max_side=self.side))
            embedded, reused = embedded + e, reused + r
            bar.update(len(chunk))
        bar.close()
        seen = {db_key(f.path) for f in files} | {db_key(path) for path, _ in problems}
        return self._finish(scope, seen, embedded, reused, unchanged, progress)

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
            vectors = self.embed([image for _, image in new])
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
        report = BuildReport(embedded, reused, unchanged, len(gone), self.skipped())
        if progress:
            print(report)
        return report
