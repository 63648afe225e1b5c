"""Property-based tests (Hypothesis) of everything that reads user input: the prompt and query
parsers, image tensors, stored paths, and load_image on mutated image bytes. Each property:
the right result, or a ValueError-type error; never another exception, never a hang. About a
minute in all."""

import io
import math
import string
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mmlib.clip import image_tensor
from mmlib.images import ImageLoadError, load_image
from mmlib.prompts import parse_prompt
from mmlib.search import parse_query
from mmlib.store.image_index import db_key, path_of

pytestmark = pytest.mark.fuzz
FAST = settings(max_examples=1500, deadline=None, database=None)
words = st.text(alphabet=string.ascii_letters + string.digits + " :,.-+eE_", max_size=40)
anything = st.text(max_size=60)  # every unicode character, surrogates included


@FAST
@given(st.one_of(words, anything))
def test_parse_prompt_gives_a_usable_prompt_or_a_clear_error(text):
    try:
        p = parse_prompt(text)
    except ValueError as err:
        assert str(err)
        return
    assert p.text and p.text.strip() == p.text
    assert math.isfinite(p.weight) and p.weight != 0
    assert not math.isnan(p.stop) and p.stop != math.inf


@FAST
@given(
    st.text(alphabet=string.ascii_letters + " ", min_size=1, max_size=20).filter(str.strip),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6).filter(bool),
)
def test_a_weight_written_after_a_text_is_read_back(text, weight):
    p = parse_prompt(f"{text}:{weight!r}")
    assert p.text == text.strip() and p.weight == weight


@FAST
@given(st.one_of(words, anything))
def test_parse_query_gives_text_or_finite_weighted_parts_or_a_clear_error(text):
    try:
        q = parse_query(text)
    except ValueError as err:
        assert str(err)
        return
    if isinstance(q, str):
        assert q.strip()
    else:
        assert q and all(part and math.isfinite(w) for part, w in q)


@FAST
@given(st.text(max_size=80))
def test_any_file_name_is_stored_losslessly(name):
    assert path_of(db_key(name)) == name


@FAST
@given(
    st.lists(st.integers(0, 6), min_size=1, max_size=5),
    st.sampled_from([torch.uint8, torch.int64, torch.float32, torch.float16, torch.bool]),
    st.floats(-3, 300),
)
def test_image_tensor_gives_a_picture_in_0_1_or_a_clear_error(shape, dtype, scale):
    x = (torch.rand(shape) * scale).to(dtype)
    try:
        out = image_tensor(x)
    except ValueError as err:
        assert str(err)
        return
    assert out.ndim == 3 and out.shape[0] == 3 and out.min() >= 0 and out.max() <= 1


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 30, 30)).save(buf, format=fmt)
    return buf.getvalue()


SEEDS = {fmt: _encoded(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP")}


@settings(max_examples=800, deadline=None, database=None)
@given(
    fmt=st.sampled_from(sorted(SEEDS)),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 10_000),
)
def test_load_image_on_mutated_bytes_gives_a_picture_or_an_image_error(fmt, flips, cut):
    data = bytearray(SEEDS[fmt])
    for pos, value in flips:
        data[pos % len(data)] = value
    data = bytes(data[: max(1, cut)]) if cut < len(data) else bytes(data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x.{fmt.lower()}"
        path.write_bytes(data)
        try:
            image = load_image(path)
        except ImageLoadError as err:
            assert path.name in str(err)
            return
        assert image.mode == "RGB" and min(image.size) >= 1
