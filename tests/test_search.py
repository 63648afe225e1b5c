"""The image index: robust builds, incremental updates, crash safety, queries, CLI and widget."""

import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from mmlib import toyworld, world_data
from mmlib.nearest import FaissSearcher, exact_topk, recall_at_k
from mmlib.search import ImageIndex, ModelMismatchError, parse_query
from mmlib.store import image_index
from mmlib.tools.cli import main


def write_world(folder, n=40, seed=0, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        pair = toyworld.all_pairs()[i % 48]
        scene = toyworld.sample_scene(seed, i, "all", "single", pair=pair)
        toyworld.render_image(scene).save(folder / f"{pair[1]}_{pair[0]}_{i:04d}.png")


def fake_png_header(path, width, height):
    """A valid PNG header claiming a huge image: a decompression bomb for our purposes."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def photo_folder(tmp_path):
    root = tmp_path / "photos"
    write_world(root / "a", 20)
    write_world(root / "b" / "nested", 20, start=20)
    write_world(root / ".hidden", 3, start=100)  # ignored
    (root / "notes.txt").write_text("not an image")  # ignored: not an image suffix
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_text("this is text, not a jpeg")
    good = Image.new("RGB", (64, 64), (200, 30, 30))
    good.save(root / "full.jpg", quality=90)
    data = (root / "full.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    fake_png_header(root / "bomb.png", 30000, 30000)
    Image.new("P", (32, 32), 3).save(root / "palette.png")
    Image.new("RGBA", (32, 32), (0, 0, 255, 128)).save(root / "alpha.png")
    Image.new("L", (32, 32), 90).save(root / "gray.png")
    Image.new("CMYK", (32, 32), (0, 255, 0, 0)).save(root / "cmyk.tif")
    Image.fromarray(np.full((32, 32), 40000, np.uint16)).save(root / "deep.png")
    return root


def test_build_indexes_good_images_and_skips_bad_ones_with_reasons(
    tiny_clip, photo_folder, tmp_path
):
    index = ImageIndex(tmp_path / "idx", tiny_clip)
    report = index.build(photo_folder, progress=False)
    assert report.embedded == 40 + 1 + 5 and len(index) == 46  # world, full.jpg, 5 odd modes
    reasons = dict(index.skipped())
    names = {os.path.basename(p): r for p, r in reasons.items()}
    assert set(names) == {"empty.png", "text.jpg", "truncated.jpg", "bomb.png"}
    assert "empty" in names["empty.png"] and "decompression bomb" in names["bomb.png"]
    assert not any(".hidden" in p or p.endswith(".txt") for p in index.paths())
    again = index.build(photo_folder, progress=False)
    assert (again.embedded, again.unchanged, again.removed) == (0, 46, 0)


def test_incremental_build_embeds_only_what_changed(tiny_clip, tmp_path):
    root = tmp_path / "photos"
    write_world(root, 12)
    index = ImageIndex(tmp_path / "idx", tiny_clip)
    index.build(root, progress=False)
    files = sorted(root.iterdir())
    files[0].rename(root / "renamed.png")  # renamed: vector reused
    shutil.copy(files[1], root / "copy.png")  # duplicate: vector reused
    files[2].unlink()  # deleted: dropped
    write_world(root, 1, start=60)  # new: embedded
    toyworld.render_image(toyworld.sample_scene(9, 9, "all", "single")).save(files[3])  # changed
    os.utime(files[3], (time.time() + 5, time.time() + 5))
    report = index.build(root, progress=False)
    assert (report.embedded, report.reused, report.removed) == (2, 2, 2)
    assert len(index) == 13 and len(set(index.paths())) == 13


def test_a_touched_file_is_fingerprinted_once_and_not_read_again(tiny_clip, tmp_path, monkeypatch):
    root = tmp_path / "photos"
    write_world(root, 3)
    index = ImageIndex(tmp_path / "idx", tiny_clip)
    index.build(root, progress=False)
    later = time.time() + 5
    os.utime(sorted(root.iterdir())[0], (later, later))  # new times, the same bytes
    read, fingerprinted = [], []
    real_hash, real_fingerprint = image_index.file_hash, image_index.fingerprint
    monkeypatch.setattr(image_index, "file_hash", lambda p: read.append(p) or real_hash(p))
    monkeypatch.setattr(
        image_index, "fingerprint", lambda p: fingerprinted.append(p) or real_fingerprint(p)
    )
    report = index.build(root, progress=False)
    # its fingerprint matches the stored one: unchanged, neither re-read whole nor reused
    assert (report.embedded, report.reused, report.unchanged) == (0, 0, 3) and not read
    assert len(fingerprinted) == (3 if os.name == "nt" else 1)
    fingerprinted.clear()
    again = index.build(root, progress=False)  # its new stamp was stored: not even fingerprinted
    assert again.unchanged == 3 and not read
    assert len(fingerprinted) == (3 if os.name == "nt" else 0)


def test_an_index_refuses_another_models_embeddings(tiny_clip, tmp_path):
    ImageIndex(tmp_path / "idx", tiny_clip)
    with pytest.raises(ModelMismatchError, match="other model weights"):
        ImageIndex(tmp_path / "idx", tiny_clip, model_id="weights:0123456789abcdef")


def test_text_image_and_weighted_queries_rank_by_the_query_vector(tiny_clip, tmp_path):
    """The mechanism, exactly: whatever the model, a query ranks the rows by their dot product
    with the query's (normalised, weighted) vector, and an image finds itself first."""
    root = tmp_path / "photos"
    write_world(root, 96)  # two pictures of each of the 48 (shape, colour) pairs
    index = ImageIndex(tmp_path / "idx", tiny_clip)
    index.build(root, progress=False)
    paths, matrix = index.matrix()

    def brute(vector, k):
        return [paths[i] for i in (matrix.float() @ vector).topk(k).indices.tolist()]

    text = index.query_vector("a purple circle")
    assert [h.path for h in index.search("a purple circle", k=5)] == brute(text, 5)
    hits = index.search("a purple circle", k=5)
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
    me = os.path.join(root, sorted(os.listdir(root))[5])
    assert index.search(me, k=1)[0].path == me  # an image finds itself
    a, b = index.query_vector("a red star"), index.query_vector("a blue star")
    mixed = torch.nn.functional.normalize(a + b, dim=0)
    assert torch.allclose(index.query_vector([("a red star", 1.0), ("a blue star", 1.0)]), mixed)
    got = [h.path for h in index.search([("a red star", 1.0), ("a blue star", 1.0)], k=4)]
    assert got == brute(mixed, 4)
    single = index.search([("a green heart", 2.0)], k=3)
    assert [h.path for h in single] == [h.path for h in index.search("a green heart", k=3)]
    assert (
        index.search("a green heart", k=1, method="faiss")[0].path
        == index.search("a green heart", k=1, method="exact")[0].path
    )
    with pytest.raises(ValueError, match="empty"):
        index.search("   ")
    with pytest.raises(ValueError, match="not a number"):
        index.search([("a red star", "lots")])
    with pytest.raises(ValueError, match="finite"):
        index.search([("a red star", float("nan"))])


def test_near_duplicates_are_found(tiny_clip, tmp_path):
    root = tmp_path / "photos"
    write_world(root, 10)
    first = sorted(root.iterdir())[0]
    Image.open(first).resize((33, 33)).save(root / "resized_copy.png")
    index = ImageIndex(tmp_path / "idx", tiny_clip)
    index.build(root, progress=False)
    pairs = index.near_duplicates(threshold=0.95)
    assert any(
        {os.path.basename(a), os.path.basename(b)} == {first.name, "resized_copy.png"}
        for a, b, _ in pairs
    )


def test_parse_query_reads_weights():
    assert parse_query("a red star") == "a red star"
    assert parse_query("a beach:1, a sunset:0.5, people:-1") == [
        ("a beach", 1.0),
        ("a sunset", 0.5),
        ("people", -1.0),
    ]
    assert parse_query("time: 10:30") == "time: 10:30"  # a colon between digits is text
    assert parse_query("a poster: a red star") == "a poster: a red star"
    with pytest.raises(ValueError, match="not a number"):
        parse_query("a beach:1.2.3")
    for bad in ("a red star:nan", "a red star:inf", "a red star:1e309", "a red star:-inf"):
        with pytest.raises(ValueError, match="finite"):
            parse_query(bad)


def test_exact_and_faiss_topk_agree_on_clustered_vectors():
    g = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(50, 64, generator=g), dim=-1)
    x = (
        centres[torch.randint(0, 50, (20_000,), generator=g)]
        + 0.3 * torch.randn(20_000, 64, generator=g) / 8
    )
    x = torch.nn.functional.normalize(x, dim=-1).half()
    q = torch.nn.functional.normalize(
        x[:20].float() + 0.05 * torch.randn(20, 64, generator=g), dim=-1
    )
    scores, idx = exact_topk(x, q, 10)
    brute = (x.float() @ q.T).T.topk(10, dim=1).indices
    assert recall_at_k(idx, brute) >= 0.98  # the same but for float16 rounding at the 10th place
    _, approx = FaissSearcher(x, nprobe=8).search(q, 10)
    assert recall_at_k(approx, brute) > 0.9


BUILD_SCRIPT = """
import sys
from mmlib import zoo
from mmlib.search import ImageIndex
index = ImageIndex(sys.argv[1], zoo.get_clip("tiny", device="cpu"), batch_size=4)
index.build(sys.argv[2], progress=False)
"""


@pytest.mark.slow
def test_a_build_killed_at_any_point_resumes_without_corruption_or_duplicates(tiny_clip, tmp_path):
    root = tmp_path / "photos"
    write_world(root, 120)
    idx = tmp_path / "idx"
    db = idx / "index.sqlite"
    for wait_rows in (1, 30, 70):  # kill early, in the middle, late
        proc = subprocess.Popen([sys.executable, "-c", BUILD_SCRIPT, str(idx), str(root)])
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    with sqlite3.connect(db, timeout=5) as con:
                        if con.execute("SELECT COUNT(*) FROM images").fetchone()[0] >= wait_rows:
                            break
                except sqlite3.OperationalError:
                    pass
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    index = ImageIndex(idx, tiny_clip, batch_size=4)
    assert index.store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    index.build(root, progress=False)
    assert len(index) == 120 and len(set(index.paths())) == 120
    clean = ImageIndex(tmp_path / "clean", tiny_clip, batch_size=4)
    clean.build(root, progress=False)
    assert index.paths() == clean.paths()
    assert torch.allclose(index.matrix()[1].float(), clean.matrix()[1].float(), atol=2e-3)


def test_cli_indexes_and_queries_with_a_contact_sheet(tiny_clip, tmp_path, capsys):
    root = tmp_path / "photos"
    write_world(root, 48)
    idx = str(tmp_path / "idx")
    assert main(["search", "index", str(root), "--index", idx]) == 0
    sheet = tmp_path / "sheet.png"
    assert (
        main(
            [
                "search",
                "query",
                "a",
                "yellow",
                "heart",
                "-k",
                "3",
                "--index",
                idx,
                "--sheet",
                str(sheet),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "rank" in out and "yellow_heart" in out.split("rank")[1].splitlines()[1]
    assert Image.open(sheet).size[0] > 100


def test_a_dataset_is_indexed_incrementally_beside_folders(tiny_clip, tmp_path):
    world = world_data.PairImages(per_pair=1, seed=5)  # 48 pictures, one per (shape, colour)
    index = ImageIndex(tmp_path / "idx", tiny_clip)
    first = index.build(world, progress=False, name="pairs")
    assert first.embedded == 48 and len(index) == 48
    again = index.build(world, progress=False, name="pairs")
    assert (again.embedded, again.unchanged, again.removed) == (0, 48, 0)
    top = index.search("a white cross", k=1)[0].path
    assert top.startswith("pairs:") and world.pairs[int(top.split(":")[1])] == ("cross", "white")
    root = tmp_path / "photos"
    write_world(root, 5)
    index.build(root, progress=False)
    assert len(index) == 53  # the folder's rows join the dataset's; neither drops the other
    smaller = world_data.PairImages(pairs=toyworld.all_pairs()[:10], per_pair=1, seed=5)
    report = index.build(smaller, progress=False, name="pairs")
    assert report.removed == 38 and len(index) == 15
    with pytest.raises(ValueError, match="folder or a Dataset"):
        index.build(42)
