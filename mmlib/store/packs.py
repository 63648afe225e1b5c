"""Model packs: every model and cached result of the `tiny` profile in one file, so a workshop
laptop or a fresh Colab VM opens every notebook without training.

A pack is a zip file: ``manifest.json`` (mmlib's version, and for each model its cache folder,
named by its recipe, and every file's size and SHA-256), then the model folders themselves.
`import_pack` checks everything before anything lands in ``MMLIB_HOME``: the pack must be made
by this mmlib version for these recipes, every file must have its recorded hash, and the
folders are unpacked beside ``MMLIB_HOME/models`` and moved in only when all of them are
complete. A crash, a bad file or a full disk leaves ``MMLIB_HOME`` as it was.

    mmlib zoo export tiny-pack.zip          # on a machine where `mmlib zoo prepare` ran
    mmlib zoo import tiny-pack.zip          # on each laptop: seconds, no training
    mmlib zoo import https://.../pack.zip   # downloads (resuming a cut download), then imports
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from mmlib import PACK_URL, __version__, zoo
from mmlib.env import MMLibError, cache_dir
from mmlib.store.checkpoints import check_file, is_html, model_dir_complete
from mmlib.store.fetch import download

FORMAT = "mmlib-pack"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CHUNK = 1 << 20


class PackError(MMLibError, ValueError):
    """A pack that cannot be imported: what is wrong with it and what to do instead."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def manifest(home: str | os.PathLike | None = None) -> dict:
    """Return the manifest of the tiny profile in MMLIB_HOME (every model must be prepared)."""
    missing = zoo.missing_models(home)
    if missing:
        raise PackError(
            f"cannot export: {', '.join(missing)} not made yet in {cache_dir(home)}. "
            f"Run `mmlib zoo prepare` first."
        )
    models = {}
    for name, folder in zoo.tiny_folders(home).items():
        files = sorted(p for p in folder.iterdir() if p.is_file())
        models[name] = {
            "folder": folder.name,
            "files": {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files},
        }
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mmlib_version": __version__,
        "profile": "tiny",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "models": models,
    }


def export_pack(path: str | os.PathLike, home: str | os.PathLike | None = None) -> Path:
    """Write every model and result of the tiny profile into one pack file; return its path."""
    path = Path(path)
    if path.suffix.lower() != ".zip":
        raise ValueError(f"a pack is a .zip file; give a name ending in .zip, not {path.name!r}")
    if path.parent and not path.parent.is_dir():
        raise FileNotFoundError(f"the folder of {str(path)!r} does not exist; create it first")
    info = manifest(home)
    folders = zoo.tiny_folders(home)
    part = path.with_name(path.name + ".part")
    with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr(MANIFEST, json.dumps(info, indent=1))
        for name, entry in info["models"].items():
            for file in entry["files"]:
                stored = zipfile.ZIP_STORED if file.endswith(".safetensors") else None
                arcname = f"models/{entry['folder']}/{file}"
                zf.write(folders[name] / file, arcname, compress_type=stored)
    os.replace(part, path)
    return path


# ---------------------------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------------------------


def _open(path: Path) -> zipfile.ZipFile:
    check_file(path, "pack", "Download the pack again.")
    with open(path, "rb") as fh:
        head = fh.read(2048)
    if is_html(head):  # check_file says so too; kept explicit for packs saved from a browser
        raise PackError(f"{str(path)!r} is a web page, not a pack. Download the pack again.")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise PackError(
            f"{str(path)!r} is not a complete pack ({err}): cut short or not a pack at all. "
            f"Download it again."
        ) from err
    return zf


def read_manifest(zf: zipfile.ZipFile, where: str) -> dict:
    """Return a pack's manifest after checking that this mmlib can use the pack."""
    try:
        info = json.loads(zf.read(MANIFEST))
    except (KeyError, ValueError, zipfile.BadZipFile) as err:
        raise PackError(f"{where} has no readable {MANIFEST}: not an mmlib pack ({err})") from err
    if info.get("format") != FORMAT or info.get("format_version") != FORMAT_VERSION:
        raise PackError(
            f"{where} is not an mmlib pack of format {FORMAT_VERSION} "
            f"(it says {info.get('format')!r} version {info.get('format_version')!r})"
        )
    made_by = info.get("mmlib_version")
    if made_by != __version__:
        raise PackError(
            f"{where} was made by mmlib {made_by}; this is mmlib {__version__}, whose models "
            f"may differ. Use the pack for mmlib {__version__} (`mmlib zoo export` where mmlib "
            f"{__version__} has prepared them), or `mmlib zoo prepare` to train them here."
        )
    wanted = {name: folder.name for name, folder in zoo.tiny_folders().items()}
    given = {name: entry.get("folder") for name, entry in info.get("models", {}).items()}
    if given != wanted:
        differ = sorted(n for n in wanted if given.get(n) != wanted[n])
        extra = sorted(set(given) - set(wanted))
        raise PackError(
            f"{where} was made for other model recipes: {differ or extra} differ from what this "
            f"mmlib makes ({[wanted[n] for n in differ]} expected, {[given.get(n) for n in differ]}"
            f" in the pack). Make a new pack with this mmlib and its settings, or run "
            f"`mmlib zoo prepare`."
        )
    return info


def _write(out, chunk: bytes) -> None:
    out.write(chunk)


def _unpack(zf: zipfile.ZipFile, info: dict, staging: Path, where: str) -> None:
    for entry in info["models"].values():
        folder = staging / entry["folder"]
        folder.mkdir(parents=True)
        for file, meta in entry["files"].items():
            if "/" in file or "\\" in file or file.startswith("."):
                raise PackError(f"{where} names a file {file!r} outside its model folder")
            arcname = f"models/{entry['folder']}/{file}"
            h, size = hashlib.sha256(), 0
            try:
                with zf.open(arcname) as src, open(folder / file, "wb") as out:
                    while chunk := src.read(CHUNK):
                        h.update(chunk)
                        size += len(chunk)
                        _write(out, chunk)
            except KeyError as err:
                raise PackError(f"{where} lacks {arcname}, which its manifest lists") from err
            except (zipfile.BadZipFile, EOFError) as err:
                raise PackError(f"{where} is damaged at {arcname} ({err})") from err
            if size != meta["size"] or h.hexdigest() != meta["sha256"]:
                raise PackError(
                    f"{arcname} in {where} is not the file the manifest records (size {size} vs "
                    f"{meta['size']}, or another SHA-256): the pack was altered or damaged. "
                    f"Download it again."
                )


def import_pack(source: str | os.PathLike, home: str | os.PathLike | None = None) -> list[str]:
    """Put a pack's models into MMLIB_HOME, all or nothing; return the names now in place.

    Models already complete in MMLIB_HOME are kept as they are.
    """
    path = Path(source)
    where = repr(str(path))
    models_dir = cache_dir(home) / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    with _open(path) as zf:
        info = read_manifest(zf, where)
        staging = Path(tempfile.mkdtemp(prefix=".import-", dir=models_dir))
        moved = []
        try:
            _unpack(zf, info, staging, where)
            todo = [e["folder"] for e in info["models"].values()]
            todo = [f for f in todo if not model_dir_complete(models_dir / f)]
            for folder in todo:  # renames within one file system: no copy, no space needed
                target = models_dir / folder
                shutil.rmtree(target, ignore_errors=True)  # an incomplete leftover
                os.replace(staging / folder, target)
                moved.append(target)
        except OSError as err:
            for target in moved:  # all or nothing
                shutil.rmtree(target, ignore_errors=True)
            if err.errno == errno.ENOSPC:
                raise PackError(
                    f"not enough disk space in {str(models_dir)!r} to import {where} (it needs "
                    f"about {path.stat().st_size / 1e6:.0f} MB); nothing was imported"
                ) from err
            raise
        except BaseException:
            for target in moved:
                shutil.rmtree(target, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return list(info["models"])


def fetch_and_import(
    url: str = PACK_URL, sha256: str | None = None, home: str | os.PathLike | None = None
) -> list[str]:
    """Download a pack (a progress bar; a cut download resumes) and import it; return the names.

    With `sha256`, the downloaded pack must have it before anything is used; either way every
    file inside is checked against the pack's manifest.
    """
    downloads = cache_dir(home) / "downloads"
    path = download(url, downloads / Path(url.split("?")[0]).name, sha256=sha256)
    try:
        return import_pack(path, home)
    finally:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


def export_command(file: str) -> int:
    """`mmlib zoo export FILE`."""
    start = time.perf_counter()
    path = export_pack(file)
    print(
        f"pack: {path} ({path.stat().st_size / 1e6:.1f} MB, {len(zoo.tiny_folders())} models, "
        f"{time.perf_counter() - start:.1f} s). On another machine: mmlib zoo import {path.name}"
    )
    return 0


def import_command(source: str, sha256: str | None = None) -> int:
    """`mmlib zoo import FILE|URL`."""
    start = time.perf_counter()
    if source.startswith(("https://", "http://")):
        names = fetch_and_import(source, sha256)
    else:
        if sha256 is not None and _sha256(check_file(source, "pack")) != sha256:
            raise PackError(f"{source!r} does not have the SHA-256 {sha256}; nothing imported")
        names = import_pack(source)
    print(
        f"imported {len(names)} models into {cache_dir() / 'models'} in "
        f"{time.perf_counter() - start:.1f} s: {', '.join(names)}"
    )
    return 0
