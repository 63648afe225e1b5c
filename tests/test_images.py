import numpy as np
import pytest
from PIL import Image

from mmlib.images import ImageLoadError, load_image


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 10, 20))  # blue strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.size == (20, 40)  # upright: portrait
    arr = np.asarray(out)
    assert arr[2, 10, 2] > 200 and arr[2, 10, 0] < 60  # the blue strip is now on top


@pytest.mark.parametrize(
    "make",
    [
        lambda: Image.new("RGBA", (8, 8), (255, 0, 0, 0)),  # fully transparent -> white
        lambda: Image.new("LA", (8, 8), (0, 0)),
        lambda: Image.new("P", (8, 8), 0),
        lambda: Image.new("L", (8, 8), 128),
        lambda: Image.new("CMYK", (8, 8), (0, 0, 0, 0)),
        lambda: Image.fromarray(np.full((8, 8), 65535, np.uint16)),
    ],
    ids=["rgba", "la", "palette", "gray", "cmyk", "16bit"],
)
def test_every_mode_becomes_8bit_rgb(tmp_path, make):
    img = make()
    path = tmp_path / ("x.tif" if img.mode == "CMYK" else "x.png")
    img.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (8, 8)
    if img.mode in ("RGBA", "LA", "I;16", "CMYK"):
        assert np.asarray(out).min() >= 250  # transparent over white, 16-bit max -> 255


def test_missing_file_raises_file_not_found_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")


@pytest.mark.parametrize("content", [b"", b"this is a text file", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_unreadable_files_raise_a_clear_error_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match="broken.png"):
        load_image(path)


def test_scikit_image_sample_photos_load_as_rgb():
    from mmlib.images import SAMPLE_PHOTOS, sample_photos

    photos = sample_photos()
    assert list(photos) == list(SAMPLE_PHOTOS) and len(photos) == 8
    assert all(p.mode == "RGB" and min(p.size) > 100 for p in photos.values())
    with pytest.raises(ValueError, match="unknown sample photos"):
        sample_photos(["lena"])
