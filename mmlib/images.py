"""Robust image loading: scanning folders without tripping over what is in them, RGB conversion,
EXIF orientation, bounded decoding, clear errors naming the file; and writing pictures and
videos, checked before the work and never half-written."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


class ImageLoadError(ValueError):
    """A file that exists but is not a readable image."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Return `image` as 8-bit RGB: palette, RGBA/LA (over white), grayscale, CMYK and 16-bit handled."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale the full range down to 8 bits instead of clipping.
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


MAX_PIXELS = 89_478_485  # Pillow's own bound (it warns above it): larger images are refused


@dataclass(frozen=True)
class ImageFile:
    """A file that looks like an image, as a folder scan found it (not yet opened)."""

    path: str  # as the file system names it; non-UTF-8 bytes are kept as surrogates
    size: int
    mtime_ns: int
    ctime_ns: int

    def stamp(self) -> str:
        """Return what changes when the file is written to, renamed over or chmod-ed."""
        return f"{self.size}:{self.mtime_ns}:{self.ctime_ns}"


def display_path(path: str | os.PathLike) -> str:
    """Return a path printable anywhere (bytes that are not UTF-8 shown as \\xNN escapes)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def scan_images(folder: str | os.PathLike) -> tuple[list[ImageFile], list[tuple[str, str]]]:
    """Return (image files, problems) under `folder`, recursively, sorted.

    Hidden files and folders and files whose suffix is not an image's are ignored. Only regular
    files count: a link that leads nowhere, a link loop, a FIFO or a device named like an
    image, and a folder that cannot be read are problems, each (path, reason), never a crash
    and never a read that blocks. Links to folders are not followed (no loops).
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"no folder at {display_path(root)!r}")
    found, problems = [], []

    def unreadable(err: OSError) -> None:
        problems.append((str(err.filename), f"folder not readable: {err.strerror}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)  # follows links: a dangling one or a loop fails here
            except OSError as err:
                problems.append((path, f"cannot look at it: {err.strerror or err}"))
                continue
            if not stat.S_ISREG(st.st_mode):
                problems.append((path, "not a regular file (a FIFO, device or socket)"))
                continue
            found.append(ImageFile(path, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return found, problems


def open_regular(path: str | os.PathLike):
    """Return a binary file object for `path`, refusing anything but a regular file without ever
    blocking (a FIFO or a link to /dev/zero is refused before a byte is read)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ImageLoadError(f"{display_path(path)!r} is not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_hash(path: str | os.PathLike) -> str:
    """Return the BLAKE2b hash of a regular file's bytes (hex): equal content, equal hash."""
    h = hashlib.blake2b(digest_size=20)
    with open_regular(path) as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


SAMPLE = 1 << 16  # bytes read from the start, middle and end of a file by `fingerprint`


def fingerprint(path: str | os.PathLike) -> str:
    """Return a cheap hash of a file: its size and its first, middle and last 64 KiB (all of it
    when it is at most 192 KiB)."""
    h = hashlib.blake2b(digest_size=16)
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        h.update(str(size).encode())
        for offset in sorted({0, max(0, size // 2 - SAMPLE // 2), max(0, size - SAMPLE)}):
            fh.seek(offset)
            h.update(fh.read(SAMPLE))
    return h.hexdigest()


def load_image(
    path: str | os.PathLike, max_pixels: int = MAX_PIXELS, max_side: int | None = None
) -> Image.Image:
    """Return the image at `path` as an upright RGB PIL image (EXIF orientation applied).

    With `max_side`, the picture is reduced while it is decoded (JPEG draft mode, then a
    thumbnail): a batch of large photos then holds small pictures, not full-size ones.
    Raises FileNotFoundError when there is no file and ImageLoadError (a ValueError) naming
    the file when it is not a regular file or not a readable image, is truncated, or has more
    than `max_pixels` pixels (a decompression bomb: a small file that would fill the memory when
    decoded).
    """
    p = Path(path)
    shown = display_path(p)
    if not p.exists():
        raise FileNotFoundError(f"no image at {shown!r} (the path does not exist)")
    if p.is_dir():
        raise ImageLoadError(f"{shown!r} is a folder, not an image file")
    try:
        fh = open_regular(p)
    except PermissionError as err:
        raise ImageLoadError(f"{shown!r} cannot be read: permission denied") from err
    except OSError as err:
        raise ImageLoadError(f"{shown!r} cannot be opened: {err.strerror or err}") from err
    with fh:
        if os.fstat(fh.fileno()).st_size == 0:
            raise ImageLoadError(f"{shown!r} is empty (0 bytes), not an image")
        try:
            with Image.open(fh) as img:
                if img.width * img.height > max_pixels:
                    raise ImageLoadError(
                        f"{shown!r} is {img.width}x{img.height} pixels, more than max_pixels="
                        f"{max_pixels}: refused as a possible decompression bomb"
                    )
                if max_side is not None:
                    img.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced size
                img.load()
                img = ImageOps.exif_transpose(img)
                if max_side is not None and max(img.size) > max_side:
                    img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
                return to_rgb(img)
        except ImageLoadError:
            raise
        except Image.DecompressionBombError as err:
            raise ImageLoadError(f"{shown!r} is too large to decode safely ({err})") from err
        except UnidentifiedImageError as err:
            raise ImageLoadError(f"{shown!r} is not an image file Pillow can read") from err
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise ImageLoadError(f"{shown!r} could not be read as an image: {err}") from err


# The photographs that ship inside scikit-image's wheel, with a caption each (as in OpenAI's
# "Interacting with CLIP" notebook). Loaded through skimage.data functions: no download.
SAMPLE_PHOTOS = {
    "astronaut": "a portrait of an astronaut with the American flag",
    "chelsea": "a facial photo of a tabby cat",
    "coffee": "a cup of coffee on a saucer",
    "rocket": "a rocket standing on a launchpad",
    "motorcycle": "a red motorcycle standing in a garage",
    "horse": "a black-and-white silhouette of a horse",
    "camera": "a person looking at a camera on a tripod",
    "page": "a page of text about segmentation",
}


def sample_photos(names=None) -> dict[str, Image.Image]:
    """Return {name: RGB PIL image} for scikit-image's sample photographs (see SAMPLE_PHOTOS)."""
    from skimage import data

    names = list(SAMPLE_PHOTOS) if names is None else list(names)
    unknown = [n for n in names if n not in SAMPLE_PHOTOS]
    if unknown:
        raise ValueError(f"unknown sample photos {unknown}; known: {list(SAMPLE_PHOTOS)}")
    photos = {}
    for name in names:
        arr = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
        if arr.dtype == bool:  # the horse is a binary silhouette
            arr = (~arr * 255).astype(np.uint8)
        photos[name] = to_rgb(Image.fromarray(arr))
    return photos


# ---------------------------------------------------------------------------------------------
# Writing pictures and videos: checked before the work, never half-written
# ---------------------------------------------------------------------------------------------

VIDEO_SUFFIXES = (".gif", ".mp4", ".webm", ".mov", ".mkv", ".avi")


def check_output_paths(png: str | os.PathLike, video: str | os.PathLike | None = None) -> None:
    """Raise a ValueError or FileNotFoundError now, before any model work, when the picture or
    the video cannot be written where asked: a missing or read-only folder, a picture not named
    .png, a video suffix that is neither GIF nor a video format imageio-ffmpeg writes."""
    targets = [(Path(png), (".png",), "picture")]
    if video is not None:
        targets.append((Path(video), VIDEO_SUFFIXES, "video"))
    for path, suffixes, what in targets:
        if path.suffix.lower() not in suffixes:
            raise ValueError(f"the {what} {str(path)!r} must end in one of {list(suffixes)}")
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            raise FileNotFoundError(
                f"the folder of the {what} {str(path)!r} does not exist; create it first"
            )
        if not os.access(folder, os.W_OK):
            raise PermissionError(f"cannot write the {what} into {str(folder)!r} (not writable)")
        if path.is_dir():
            raise ValueError(f"the {what} {str(path)!r} is a folder; give a file name")


def write_via_tmp(path: Path, write) -> Path:
    """Call write(tmp) on a temporary file beside `path`, then rename it: no half-written file."""
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_video(
    frames: Sequence[torch.Tensor], path: str | Path, fps: int = 10, scale: int = 4
) -> Path:
    """Write frames (each (3, H, W) in [0, 1]) as a GIF or MP4 (by suffix), enlarged `scale` times."""
    import imageio.v3 as iio

    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"the video {str(path)!r} must end in one of {list(VIDEO_SUFFIXES)}")
    if not frames:
        raise ValueError("no frames: generate with frames_every > 0")
    pictures = [(f.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8) for f in frames]
    arrs = np.stack([p.repeat(scale, axis=0).repeat(scale, axis=1) for p in pictures])  # nearest
    if path.suffix.lower() == ".gif":
        return write_via_tmp(path, lambda tmp: iio.imwrite(tmp, arrs, duration=1000 / fps, loop=0))
    return write_via_tmp(path, lambda tmp: iio.imwrite(tmp, arrs, fps=fps))
