"""The ipywidgets front ends, under whichever ipywidgets is installed (make test runs this file
under ipywidgets 8 here and under Colab's 7.7.1 in the Colab check): set values, click, read."""

import io
import sys
import types
from datetime import datetime, timezone

import ipywidgets
import pytest
import torch

from mmlib import generate as g
from mmlib import toyworld, widgets
from mmlib.search import ImageIndex
from mmlib.vqgan import VQGAN
from mmlib.vqgan_training import TINY_VQGAN

pytestmark = pytest.mark.widgets
MAJOR = int(ipywidgets.__version__.split(".")[0])


def upload(widget, name: str, content: bytes) -> None:
    """Put a file into a FileUpload the way the browser does, in this ipywidgets' shape."""
    if MAJOR >= 8:
        widget.value = (
            {
                "name": name,
                "type": "image/png",
                "size": len(content),
                "content": memoryview(content),
                "last_modified": datetime.now(timezone.utc),
            },
        )
    else:  # 7: a read-only dict keyed by file name
        meta = {"name": name, "type": "image/png", "size": len(content), "lastModified": 0}
        widget.set_trait("value", {name: {"metadata": meta, "content": content}})


@pytest.mark.parametrize(
    "value",
    [
        {"a.png": {"metadata": {"name": "a.png"}, "content": b"abc"}},  # ipywidgets 7
        ({"name": "a.png", "type": "image/png", "size": 3, "content": memoryview(b"abc")},),  # 8
    ],
    ids=["ipywidgets-7", "ipywidgets-8"],
)
def test_uploaded_files_reads_both_shapes_of_file_upload(value):
    fake = types.SimpleNamespace(value=value)
    assert widgets.uploaded_files(fake) == [("a.png", b"abc")]
    assert widgets.uploaded_files(types.SimpleNamespace(value=type(value)())) == []


def test_colab_s_widget_manager_is_switched_on_only_for_ipywidgets_8_on_colab(monkeypatch):
    calls = []
    colab = types.ModuleType("google.colab")
    colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append(1))
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.output", colab.output)
    monkeypatch.setattr(widgets, "in_colab", lambda: True)
    assert widgets.colab_widget_manager() == (MAJOR >= 8) and len(calls) == (MAJOR >= 8)
    monkeypatch.setattr(widgets, "in_colab", lambda: False)
    assert widgets.colab_widget_manager() is False


def test_zero_shot_widget_classifies_on_click_and_reports_bad_input(tiny_clip):
    model, preprocess, tokenizer = tiny_clip
    star = toyworld.render_image(toyworld.sample_scene(0, 1, "all", "single", pair=("star", "red")))
    w = widgets.ZeroShotWidget(model, preprocess, tokenizer, {"star": star})
    w.labels.value = "red star, blue circle"
    w.button.click()
    assert w.error is None and w.result[0][0] == "red star"
    assert abs(sum(p for _, p in w.result) - 1) < 1e-5
    w.labels.value = "cat, cat"
    w.button.click()
    assert w.result is None and "more than once" in w.error
    png = io.BytesIO()
    star.rotate(90).save(png, format="PNG")
    upload(w.upload, "mine.png", png.getvalue())
    assert w.picker.value == "mine.png" and "mine.png" in w.images
    upload(w.upload, "notes.txt", b"hello")
    assert "notes.txt" in w.error and w.picker.value == "mine.png"
    with pytest.raises(ValueError, match="images is empty"):
        widgets.ZeroShotWidget(model, preprocess, tokenizer, {})


def test_search_widget_fills_the_gallery(tiny_clip, tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(20):
        pair = toyworld.all_pairs()[i % 48]
        scene = toyworld.sample_scene(0, i, "all", "single", pair=pair)
        toyworld.render_image(scene).save(root / f"{pair[1]}_{pair[0]}_{i:04d}.png")
    index = ImageIndex(tmp_path / "idx", tiny_clip)
    index.build(root, progress=False)
    w = widgets.SearchWidget(index, k=3)
    w.query.value = "a red circle"
    assert len(w.gallery.children) == 3 and len(w.hits) == 3
    w.query.value = "   "
    assert w.gallery.children == () and "empty" in w.message.value


def test_generate_widget_runs_in_the_background_and_stop_really_stops():
    from mmlib import tiny_models

    torch.manual_seed(0)
    clip = tiny_models.new_tiny_clip(0).eval(), None, tiny_models.tiny_tokenizer()
    vqgan = VQGAN(**TINY_VQGAN).eval()
    w = widgets.GenerateWidget(vqgan, [clip], g.GenerateConfig(steps=3, cutn=2), preview_every=1)
    w.start.click()
    w.thread.join(timeout=60)
    assert w.result is not None and w.result.stopped is None and w.preview.value[:4] == b"\x89PNG"
    assert w.status.value == "done" and not w.start.disabled
    w.steps.value = 10_000
    w.start.click()
    w.stop.click()  # clicked while the loop runs: it ends at its next step
    w.thread.join(timeout=60)
    assert not w.thread.is_alive() and "stopped" in w.result.stopped
    w.prompt.value = "a star:1.2.3"
    assert w.run() is None and "not a number" in w.status.value
