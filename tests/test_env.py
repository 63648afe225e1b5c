import os

import pytest
import torch

from mmlib import env


def test_device_defaults_to_the_best_available_and_can_be_overridden(monkeypatch):
    monkeypatch.delenv("MMLIB_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert env.get_device().type in (expected, "mps")
    assert env.get_device("cpu").type == "cpu"
    monkeypatch.setenv("MMLIB_DEVICE", "cpu")
    assert env.get_device().type == "cpu"


def test_bad_device_names_the_value():
    with pytest.raises(ValueError, match="gpu0"):
        env.get_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_cuda_without_a_gpu_says_so():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        env.get_device("cuda")


def test_seed_everything_makes_random_numbers_repeat():
    env.seed_everything(3)
    a = torch.randn(4), __import__("numpy").random.rand(), __import__("random").random()
    env.seed_everything(3)
    b = torch.randn(4), __import__("numpy").random.rand(), __import__("random").random()
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    with pytest.raises(ValueError, match="seed"):
        env.seed_everything(-1)


def test_colab_is_detected_from_its_environment(monkeypatch):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    assert env.in_colab() is False
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_20261101")
    assert env.in_colab() is True


def test_profile_comes_from_argument_then_environment(monkeypatch):
    monkeypatch.setenv("MMLIB_PROFILE", "full")
    assert env.get_profile() == "full"
    assert env.get_profile("tiny") == "tiny"
    with pytest.raises(ValueError, match="huge"):
        env.get_profile("huge")


def test_cache_dir_follows_mmlib_home(tmp_home):
    assert env.cache_dir() == tmp_home and tmp_home.is_dir()


def test_doctor_reports_versions_device_profile_cache_and_full_weights(tmp_home, capsys):
    report = env.doctor("tiny")
    out = capsys.readouterr().out
    for key in ("torch", "open_clip_torch", "device", "profile", "cache_dir"):
        assert key in report and key in out
    assert report["cache_dir"] == str(tmp_home)
    assert any(k.startswith("full: ") and v == "missing" for k, v in report.items())
    assert "mmlib zoo download full" in out
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
