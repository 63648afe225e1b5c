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
def test_asking_for_a_device_this_machine_lacks_names_what_it_has(monkeypatch):
    with pytest.raises(ValueError, match=r"device='cuda' asks for a device .* it has \['cpu'"):
        env.get_device("cuda")
    monkeypatch.setenv("MMLIB_DEVICE", "cuda:1")
    with pytest.raises(ValueError, match=r"MMLIB_DEVICE='cuda:1'.*unset MMLIB_DEVICE"):
        env.get_device()
    with pytest.raises(ValueError, match="not a device name"):
        env.get_device("gpu0")


def test_a_model_moves_to_the_device_asked_for_or_the_error_names_both():
    model = torch.nn.Linear(2, 2)
    assert env.to_device(model, torch.device("cpu")) is model
    with torch.device("meta"):
        ghost = torch.nn.Linear(2, 2)  # weights that exist nowhere cannot be moved
    with pytest.raises(env.MMLibError, match="on meta and cannot be moved to cpu"):
        env.to_device(ghost, torch.device("cpu"), "model")


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


def test_cache_dir_follows_mmlib_home(tmp_home):
    assert env.cache_dir() == tmp_home and tmp_home.is_dir()
