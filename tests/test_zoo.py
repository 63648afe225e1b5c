import json

import pytest

from mmlib import recipes, tiny_models, zoo
from mmlib.store.downloads import FULL_FILES, download_instructions, full_profile_status
from mmlib.store.weights import WeightsNotFoundError, find_local_weights
from mmlib.tools import prepare
from mmlib.tools.cli import main


def test_tiny_clip_folder_is_a_local_dir_keyed_by_config_and_seed(tmp_home):
    folder = tiny_models.tiny_clip_dir("tiny-clip", train=False)
    assert folder.parent == tmp_home / "models"
    assert {"open_clip_config.json", "open_clip_model.safetensors", "mmlib.json"} <= {
        p.name for p in folder.iterdir()
    }
    assert json.loads((folder / "open_clip_config.json").read_text()) == recipes.TINY_CLIP_CONFIG
    assert tiny_models.tiny_clip_dir("judge-clip", train=False) != folder  # other seed, other key
    with pytest.raises(ValueError, match="not a tiny model"):
        tiny_models.tiny_clip_dir("huge-clip")


def test_full_profile_registry_lists_source_size_and_place(tmp_home):
    status = full_profile_status()
    assert len(status) == len(FULL_FILES) >= 3
    assert all(not s["present"] and s["url"].startswith("https://") for s in status)
    text = download_instructions()
    for item in FULL_FILES:
        assert item.url in text and str(item.local_path()) in text


def test_full_weights_placed_in_mmlib_home_are_found(tmp_home):
    item = FULL_FILES[0]
    item.local_path().parent.mkdir(parents=True)
    item.local_path().write_bytes(b"x")
    assert find_local_weights("ViT-B-32", "laion2b_s34b_b79k") == item.local_path()
    assert full_profile_status()[0]["present"]


def test_download_full_offline_prints_what_to_fetch_and_fails(tmp_home, capsys):
    assert main(["zoo", "download", "full"]) == 1
    out = capsys.readouterr().out
    assert "nothing downloaded" in out and "put at" in out and "last.ckpt" in out


def test_preparing_the_full_profile_offline_raises_an_error_the_cli_reports(tmp_home, capsys):
    # a library raises; only the CLI turns it into an exit status (it was a SystemExit here)
    with pytest.raises(WeightsNotFoundError, match="fetch the files named above"):
        prepare.prepare("full")
    assert main(["zoo", "prepare", "full"]) == 2
    assert "fetch the files named above" in capsys.readouterr().err


def test_full_profile_offline_raises_one_actionable_error(tmp_home, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(WeightsNotFoundError, match="mmlib zoo download full"):
        zoo.get_clip("full")


def test_example_images_come_with_matching_captions(tmp_home):
    images, captions = zoo.example_images("tiny")
    assert len(images) == len(captions) == 4 and images[0].size == (32, 32)
    assert captions[0] == "a red star"


def test_two_callers_at_once_train_the_tiny_model_only_once(tmp_home, monkeypatch):
    import threading

    monkeypatch.setattr(
        recipes,
        "TINY_CLIP_TRAINING",
        {**recipes.TINY_CLIP_TRAINING, "steps": 2, "batch_size": 8, "eval_every": 0},
    )
    calls = []
    real = tiny_models._make_tiny_clip
    monkeypatch.setattr(tiny_models, "_make_tiny_clip", lambda *a: (calls.append(a), real(*a)))
    folders = []
    threads = [
        threading.Thread(target=lambda: folders.append(tiny_models.tiny_clip_dir("tiny-clip")))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and folders[0] == folders[1]
    info = json.loads((folders[0] / "mmlib.json").read_text())
    assert info["trained"] and info["steps"] == 2 and "zeroshot_heldout" in info


def test_the_prepared_tiny_clip_learned_the_shapes_world(tiny_clip):
    """The course's tiny CLIP (trained by `mmlib zoo prepare`) really recognises shapes."""
    info = tiny_models.tiny_clip_info("tiny-clip")
    assert info["trained"] and info["split"] == "heldout"
    assert info["zeroshot_seen"] >= 0.9 and info["zeroshot_heldout"] >= 0.7
    judge = tiny_models.tiny_clip_info("judge-clip")
    assert judge["split"] == "all" and judge["seed"] != info["seed"]
    assert judge["zeroshot_seen"] >= 0.9


def test_train_clip_command_writes_a_loadable_model(tmp_path, capsys):
    from mmlib.store.clip_loading import load_clip

    code = main(
        [
            "train",
            "clip",
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "3",
            "--batch-size",
            "8",
            "--eval-every",
            "0",
            "--workers",
            "0",
        ]
    )
    assert code == 0 and "held-out" in capsys.readouterr().out
    model = load_clip(f"local-dir:{tmp_path / 'run' / 'model'}").model
    assert model.visual.image_size == (32, 32) or model.visual.image_size == 32


def test_prepare_runs_side_by_side_on_a_cpu_and_does_nothing_when_all_is_there(
    tmp_home, monkeypatch, capsys, fake_prepared_home
):
    monkeypatch.delenv("MMLIB_PREPARE_LANES", raising=False)
    lanes, threads = prepare.prepare_lanes()
    assert 1 <= lanes <= 3 and lanes * threads <= max(2, __import__("os").cpu_count())
    monkeypatch.setenv("MMLIB_PREPARE_LANES", "1")
    assert prepare.prepare_lanes()[0] == 1
    monkeypatch.setenv("MMLIB_PREPARE_LANES", "zero")
    with pytest.raises(ValueError, match="MMLIB_PREPARE_LANES"):
        prepare.prepare_lanes()
    monkeypatch.delenv("MMLIB_PREPARE_LANES")
    fake_prepared_home(tmp_home)
    assert prepare.prepare() == {}  # nothing to make: nothing trains, nothing is timed
    out = capsys.readouterr().out
    assert all(name in out for name in prepare.PREPARE_STEPS)


def test_prepare_steps_are_what_the_profile_caches_each_after_what_it_needs():
    steps = list(prepare.PREPARE_STEPS)
    assert sorted(steps) == sorted(zoo.tiny_folders())
    for k, name in enumerate(steps):  # one lane makes them in this order
        assert set(prepare.PREPARE_STEPS[name]) <= set(steps[:k]), name
    assert prepare.PREPARE_STEPS["tiny-dalle"] == ("tiny-vqgan",)  # the token model needs no judge
