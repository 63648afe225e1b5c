import json

import pytest

from mmlib import zoo
from mmlib.cli import main
from mmlib.clip import WeightsNotFoundError


def test_tiny_clip_folder_is_a_local_dir_keyed_by_config_and_seed(tmp_home):
    folder = zoo.tiny_clip_dir("tiny-clip")
    assert folder.parent == tmp_home / "models"
    assert {"open_clip_config.json", "open_clip_model.safetensors", "mmlib.json"} <= {
        p.name for p in folder.iterdir()
    }
    assert json.loads((folder / "open_clip_config.json").read_text()) == zoo.TINY_CLIP_CONFIG
    assert zoo.tiny_clip_dir("judge-clip") != folder  # other seed, other key
    with pytest.raises(ValueError, match="not a tiny model"):
        zoo.tiny_clip_dir("huge-clip")


def test_full_profile_registry_lists_source_size_and_place(tmp_home):
    status = zoo.full_profile_status()
    assert len(status) == len(zoo.FULL_FILES) >= 3
    assert all(not s["present"] and s["url"].startswith("https://") for s in status)
    text = zoo.download_instructions()
    for item in zoo.FULL_FILES:
        assert item.url in text and str(item.local_path()) in text


def test_full_weights_placed_in_mmlib_home_are_found(tmp_home):
    item = zoo.FULL_FILES[0]
    item.local_path().parent.mkdir(parents=True)
    item.local_path().write_bytes(b"x")
    assert zoo.full_weights_path(*zoo.FULL_CLIP) == item.local_path()
    assert zoo.full_profile_status()[0]["present"]


def test_download_full_offline_prints_what_to_fetch_and_fails(tmp_home, capsys):
    assert main(["zoo", "download", "full"]) == 1
    out = capsys.readouterr().out
    assert "nothing downloaded" in out and "put at" in out and "last.ckpt" in out


def test_full_profile_offline_raises_one_actionable_error(tmp_home, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(WeightsNotFoundError, match="mmlib zoo download full"):
        zoo.get_clip("full")


def test_example_images_come_with_matching_captions(tmp_home):
    images, captions = zoo.example_images("tiny")
    assert len(images) == len(captions) == 4 and images[0].size == (32, 32)
    assert captions[0] == "a red star"


def test_doctor_command_runs(tmp_home, capsys):
    assert main(["doctor"]) == 0
    assert "profile" in capsys.readouterr().out
