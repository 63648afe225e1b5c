"""A hostile-input corpus: what a careless user or a strange folder can throw at mmlib, each case
with its expected outcome (the right result, or one clear error naming the input)."""

import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from mmlib import search, tiny_models, toyworld
from mmlib.clip import encode_images, image_tensor
from mmlib.images import ImageLoadError, load_image, scan_images
from mmlib.search import ImageIndex, ModelMismatchError
from mmlib.store import image_index
from mmlib.store.clip_loading import load_clip
from mmlib.tools.cli import main
from mmlib.zeroshot import build_classifier, classify

pytestmark = pytest.mark.hostile

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0  # root reads chmod-000 files anyway


def shape_png(path, pair=("star", "red"), seed=0):
    scene = toyworld.sample_scene(seed, 0, "all", "single", pair=pair)
    toyworld.render_image(scene).save(path)
    return path


def bomb_png(path, width=50_000, height=50_000):
    """A valid PNG header claiming a huge image: a decompression bomb for our purposes."""

    def chunk(kind, data):
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


@pytest.fixture
def hostile_folder(tmp_path):
    """Good pictures beside every kind of entry that once stopped, hung or fooled a build."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for i, pair in enumerate([("star", "red"), ("circle", "blue"), ("heart", "green")]):
        shape_png(root / f"good{i}.png", pair, seed=i)
    raw = os.fsencode(str(root)) + b"/z\xff.png"  # a name that is not UTF-8
    shutil.copy(root / "good0.png", raw)
    os.symlink("loop.png", root / "loop.png")  # a link to itself
    os.symlink(root / "nowhere.png", root / "dangling.png")
    os.mkfifo(root / "p.png")  # reading it would wait forever
    os.symlink("/dev/zero", root / "zero.png")  # reading it would never end
    bomb_png(root / "bomb.png")
    (root / "text.png").write_text("not a picture")
    shape_png(root / "sub" / "deep.png", ("cross", "white"))
    return root


def test_scanning_a_hostile_folder_lists_problems_and_never_blocks(hostile_folder):
    start = time.perf_counter()
    files, problems = scan_images(hostile_folder)
    names = sorted(os.path.basename(f.path) for f in files)
    assert "z\udcff.png" in names and "deep.png" in names and "p.png" not in names
    reasons = {os.path.basename(p): why for p, why in problems}
    assert set(reasons) == {"loop.png", "dangling.png", "p.png", "zero.png"}
    assert "regular" in reasons["p.png"] and "regular" in reasons["zero.png"]
    assert time.perf_counter() - start < 30  # a behaviour (no hang), not a speed goal


def test_a_hostile_folder_is_indexed_with_every_bad_entry_skipped_and_a_reason(
    tiny_clip, hostile_folder, tmp_path
):
    index = ImageIndex(tmp_path / "idx", tiny_clip, batch_size=2)
    report = index.build(hostile_folder, progress=False)
    indexed = {os.path.basename(p) for p in index.paths()}
    assert indexed == {"good0.png", "good1.png", "good2.png", "z\udcff.png", "deep.png"}
    assert report.reused == 1  # the non-UTF-8 file is a copy of good0.png
    skipped = {os.path.basename(p): why for p, why in index.skipped()}
    assert set(skipped) == {"loop.png", "dangling.png", "p.png", "zero.png", "bomb.png", "text.png"}
    assert "decompression bomb" in skipped["bomb.png"] and "not an image" in skipped["text.png"]
    again = index.build(hostile_folder, progress=False)  # the same: nothing new, nothing lost
    assert (again.embedded, again.unchanged, again.removed) == (0, 5, 0)
    weird = next(p for p in index.paths() if p.endswith("z\udcff.png"))
    assert os.path.exists(weird)  # stored losslessly: the path still opens the file


def test_a_same_size_same_mtime_change_is_seen(tiny_clip, tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    target = root / "a.ppm"  # uncompressed: another picture of the same size, same bytes count
    toyworld.render_image(toyworld.sample_scene(0, 0, "all", "single", pair=("star", "red"))).save(
        target
    )
    index = ImageIndex(tmp_path / "idx", tiny_clip)
    index.build(root, progress=False)
    before = index.matrix()[1].clone()
    st = target.stat()
    other = toyworld.sample_scene(0, 0, "all", "single", pair=("circle", "blue"))
    toyworld.render_image(other).save(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime as before
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    report = index.build(root, progress=False)
    assert report.embedded == 1 and not torch.equal(index.matrix()[1], before)
    os.utime(target)  # a touch alone is not a change
    assert index.build(root, progress=False).embedded == 0


def test_a_file_that_could_not_be_read_is_retried_once_it_may_have_changed(
    tiny_clip, tmp_path, monkeypatch
):
    root = tmp_path / "photos"
    root.mkdir()
    locked = shape_png(root / "locked.png")
    index = ImageIndex(tmp_path / "idx", tiny_clip)
    if ROOT_USER:  # root reads chmod-000 files: make reading fail the way it does for a user
        real = image_index.file_hash

        def denied(path):
            if str(path).endswith("locked.png"):
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(image_index, "file_hash", denied)
    os.chmod(locked, 0)
    index.build(root, progress=False)
    assert "Permission denied" in dict(index.skipped())[str(locked)]
    assert index.build(root, progress=False).embedded == 0  # unchanged: not retried
    os.chmod(locked, 0o644)  # fixed: its change time moves, so it is tried again
    monkeypatch.undo()
    report = index.build(root, progress=False)
    assert report.embedded == 1 and index.skipped() == []


def test_an_unreadable_subfolder_is_reported_not_ignored(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    (root / "closed").mkdir(parents=True)
    shape_png(root / "closed" / "x.png")
    shape_png(root / "open.png")
    os.chmod(root / "closed", 0)
    if ROOT_USER:  # root lists a chmod-000 folder anyway: refuse it the way a user is refused
        real = os.scandir

        def refuse(path="."):
            if str(path).endswith("closed"):
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(os, "scandir", refuse)
    try:
        files, problems = scan_images(root)
    finally:
        os.chmod(root / "closed", 0o755)
    assert [os.path.basename(f.path) for f in files] == ["open.png"]
    assert problems == [(str(root / "closed"), "folder not readable: Permission denied")]


def test_a_failed_batch_rolls_back_and_the_index_stays_usable(tiny_clip, tmp_path, monkeypatch):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(6):
        shape_png(root / f"{i}.png", toyworld.all_pairs()[i], seed=i)
    index = ImageIndex(tmp_path / "idx", tiny_clip, batch_size=2)
    calls = {"n": 0}
    real = search.encode_images

    def fails_second_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(search, "encode_images", fails_second_batch)
    with pytest.raises(RuntimeError, match="simulated"):
        index.build(root, progress=False)
    assert len(index) == 2  # the first batch is kept whole, the second not at all
    monkeypatch.undo()
    report = index.build(root, progress=False)  # no "transaction within a transaction"
    assert report.embedded == 4 and len(index) == 6


def test_a_deleted_folder_leaves_the_index_and_its_results_are_still_drawn(
    tiny_clip, tmp_path, capsys
):
    keep, gone = tmp_path / "keep", tmp_path / "gone"
    keep.mkdir()
    gone.mkdir()
    shape_png(keep / "a.png", ("star", "red"))
    shape_png(gone / "b.png", ("circle", "blue"))
    index = ImageIndex(tmp_path / "idx", tiny_clip)
    index.build(keep, progress=False)
    index.build(gone, progress=False)
    hits = index.search("a blue circle", k=2)
    shutil.rmtree(gone)
    sheet = search.contact_sheet(hits, tmp_path / "sheet.png")  # a grey tile, no crash
    assert Image.open(sheet).size[0] > 50
    report = index.build(gone, progress=False)  # the folder is gone: its rows go too
    assert report.removed == 1 and index.paths() == [str(keep / "a.png")]
    with pytest.raises(FileNotFoundError, match="no folder"):
        index.build(tmp_path / "never-was", progress=False)


def test_the_index_knows_its_model_by_its_weights_not_its_name(tiny_clip, tmp_path):
    folder = tmp_path / "model"
    tiny_models.save_tiny_clip(folder, tiny_clip.model, {})
    ImageIndex(tmp_path / "idx", tiny_clip)
    same = load_clip(f"local-dir:{folder}", device="cpu")  # same weights, another name
    ImageIndex(tmp_path / "idx", same)
    with torch.no_grad():
        same.model.logit_scale.add_(1.0)  # retrained into the same folder: other weights
    with pytest.raises(ModelMismatchError, match="other model weights"):
        ImageIndex(tmp_path / "idx", same)


def test_queries_that_once_fooled_the_parser(tiny_clip, tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    shape_png(root / "a.png")
    index = ImageIndex(tmp_path / "idx", tiny_clip)
    index.build(root, progress=False)
    text = index.query_vector("time: 10:30")
    assert torch.allclose(text, index.query_vector(search.parse_query("time: 10:30")))
    assert index.search("a screenshot.png", k=1)  # no such file: it is text
    with pytest.raises(FileNotFoundError, match="no image at"):
        index.search("./missing.png", k=1)


def test_cli_search_errors_are_one_line_and_a_mistyped_index_is_not_created(
    prepared, tmp_path, capsys
):
    wrong = tmp_path / "no-such-index"
    assert main(["search", "query", "a red star", "--index", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert "no image index" in err and "Traceback" not in err and not wrong.exists()
    assert main(["search", "query", "a red star:nan", "--index", str(wrong)]) == 2
    assert "finite" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The notebook API: tensors of every shape and scale, class lists, templates
# ---------------------------------------------------------------------------------------------


def test_image_tensors_in_every_common_layout_give_the_same_picture():
    rgb = torch.rand(3, 8, 8)
    u8 = (rgb * 255).round().to(torch.uint8)
    same = [u8, u8.long(), u8.permute(1, 2, 0), torch.cat([u8, torch.full((1, 8, 8), 255)])]
    for x in same:
        assert torch.allclose(image_tensor(x), u8.float() / 255, atol=1e-6)
    grey = torch.rand(8, 8)
    assert torch.equal(image_tensor(grey), grey.expand(3, 8, 8))
    assert torch.equal(image_tensor(grey[None]), grey.expand(3, 8, 8))
    half_transparent = torch.cat([torch.zeros(3, 2, 2), torch.full((1, 2, 2), 0.5)])
    assert torch.allclose(image_tensor(half_transparent), torch.full((3, 2, 2), 0.5))


@pytest.mark.parametrize(
    "bad,message",
    [
        (torch.rand(3, 8, 8) * 255, "divide it by 255"),
        (torch.full((3, 8, 8), float("nan")), "NaN"),
        (torch.rand(3, 8, 8) - 2, "want floats in"),
        (torch.zeros(3, 0, 0), "empty"),
        (torch.zeros(5, 8, 8), "channels"),
        (torch.zeros(2, 3, 8, 8, 1), "want"),
        (torch.full((3, 4, 4), 300), "outside 0..255"),
    ],
    ids=["float-0-255", "nan", "negative", "0x0", "5-channels", "5-d", "int-300"],
)
def test_image_tensors_that_cannot_be_pictures_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        image_tensor(bad)


def test_encode_images_refuses_a_0x0_picture_and_scales_integer_tensors(tmp_home):
    model, preprocess, _ = load_clip(
        f"local-dir:{tiny_models.tiny_clip_dir(train=False)}", device="cpu"
    )
    with pytest.raises(ValueError, match="empty"):
        encode_images(model, None, [Image.new("RGB", (0, 0))], progress=False)
    x = torch.rand(2, 3, 32, 32)
    as_ints = (x * 255).round().long()
    a = encode_images(model, None, as_ints, progress=False)
    b = encode_images(model, None, as_ints.float() / 255, progress=False)
    assert torch.allclose(a, b, atol=1e-5)


def test_class_lists_and_templates_that_cannot_work_are_refused(tmp_home):
    model, preprocess, tok = load_clip(
        f"local-dir:{tiny_models.tiny_clip_dir(train=False)}", device="cpu"
    )
    with pytest.raises(ValueError, match="list of names"):
        build_classifier(model, tok, "red star")
    with pytest.raises(ValueError, match="class name 0"):
        build_classifier(model, tok, [""])
    with pytest.raises(ValueError, match="exactly one"):
        build_classifier(model, tok, ["red star"], ["{} and {}"])
    classifier = build_classifier(model, tok, ["red star", "blue circle"])
    with pytest.raises(ValueError, match="top_k"):
        classify(model, preprocess, [Image.new("RGB", (8, 8))], classifier, top_k=-1)


# ---------------------------------------------------------------------------------------------
# Files that look like weights, and the generator's command line
# ---------------------------------------------------------------------------------------------


def test_a_model_folder_with_missing_cut_or_html_weights_never_loads_random_weights(tmp_home):
    folder = tiny_models.tiny_clip_dir(train=False)
    weights = folder / "open_clip_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # a download cut short
    with pytest.raises(ValueError, match="open_clip_model.safetensors.*header needs"):
        load_clip(f"local-dir:{folder}")
    weights.write_text("<!DOCTYPE html><html>503</html>")
    with pytest.raises(ValueError, match="HTML page"):
        load_clip(f"local-dir:{folder}")
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="has no weights.*random"):
        load_clip(f"local-dir:{folder}")


def _run(argv) -> int:
    """Run the CLI; return its status whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--out", "/no/such/dir/x.png"], "does not exist"),
        (["--video", "{tmp}/x.avix"], "must end in"),
        (["--steps", "0"], "at least 1"),
        (["--steps", "-5"], "at least 1"),
        (["--size", "0"], "at least 1"),
        (["--cutn", "0"], "at least 1"),
        (["--cutn", "-3"], "at least 1"),
        (["--lr", "inf"], "finite"),
        (["--lr", "nan"], "finite"),
    ],
    ids=[
        "out-dir",
        "video-ext",
        "steps-0",
        "steps-neg",
        "size-0",
        "cutn-0",
        "cutn-neg",
        "lr-inf",
        "lr-nan",
    ],
)
def test_generate_refuses_bad_arguments_before_any_work(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    start = time.perf_counter()
    assert _run(["generate", "a red star", "--out", str(tmp_path / "x.png"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert time.perf_counter() - start < 20  # refused at once, not after the steps
    assert not list(tmp_path.glob("*.avix")) and not (tmp_path / "x.png").exists()


def test_a_prompt_with_three_numbers_or_a_bad_weight_is_refused(capsys, tmp_path):
    for prompt in ("a:1:2:3", "a red star:nan", "a red star:0"):
        assert main(["generate", prompt, "--out", str(tmp_path / "x.png")]) == 2
        assert "prompt" in capsys.readouterr().err


def test_two_trainings_into_one_folder_do_not_collide(tmp_path):
    from filelock import FileLock

    out = tmp_path / "run"
    out.mkdir()
    with FileLock(str(out / ".lock")):  # as if another `mmlib train clip --out run` were running
        cmd = [sys.executable, "-m", "mmlib", "train", "clip", "--out", str(out), "--steps", "2"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "another training is writing" in done.stderr
    assert "Traceback" not in done.stderr


def test_load_image_refuses_what_is_not_a_regular_picture(tmp_path):
    with pytest.raises(ImageLoadError, match="regular"):
        load_image("/dev/zero.png" if Path("/dev/zero.png").exists() else _zero_link(tmp_path))
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(bomb_png(tmp_path / "bomb.png"))
    big = tmp_path / "big.png"
    Image.new("RGB", (2000, 1000), "red").save(big)
    assert load_image(big, max_side=100).size == (100, 50)


def _zero_link(tmp_path):
    link = tmp_path / "zero.png"
    os.symlink("/dev/zero", link)
    return link
