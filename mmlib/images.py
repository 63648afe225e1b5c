"""Robust image loading: RGB conversion, EXIF orientation, clear errors naming the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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


MAX_PIXELS = 100_000_000  # larger images are refused as possible decompression bombs


def scan_images(folder: str | os.PathLike) -> list[Path]:
    """Return the image files under `folder` (recursively, sorted), ignoring hidden files and
    folders and files whose suffix is not an image's."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"no folder at {str(root)!r}")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                found.append(Path(dirpath) / name)
    return found


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Return the image at `path` as an upright RGB PIL image (EXIF orientation applied).

    Raises FileNotFoundError when there is no file and ImageLoadError (a ValueError) naming
    the file when it is not a readable image, is truncated, or has more than `max_pixels`
    pixels (a decompression bomb: a small file that would fill the memory when decoded).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no image at {str(p)!r} (the path does not exist)")
    if p.is_dir():
        raise ImageLoadError(f"{str(p)!r} is a folder, not an image file")
    if p.stat().st_size == 0:
        raise ImageLoadError(f"{str(p)!r} is empty (0 bytes), not an image")
    try:
        with Image.open(p) as img:
            if img.width * img.height > max_pixels:
                raise ImageLoadError(
                    f"{str(p)!r} is {img.width}x{img.height} pixels, more than max_pixels="
                    f"{max_pixels}: refused as a possible decompression bomb"
                )
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageLoadError(f"{str(p)!r} is too large to decode safely ({err})") from err
    except UnidentifiedImageError as err:
        raise ImageLoadError(f"{str(p)!r} is not an image file Pillow can read") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(f"{str(p)!r} could not be read as an image: {err}") from err


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
