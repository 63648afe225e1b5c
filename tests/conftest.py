"""Shared fixtures: every test runs offline, and zoo tests get a private MMLIB_HOME."""

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def tmp_home(tmp_path, monkeypatch):
    """A fresh, empty MMLIB_HOME for tests that must not touch the prepared one."""
    home = tmp_path / "mmlib_home"
    monkeypatch.setenv("MMLIB_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_clip():
    """The tiny CLIP of this run's MMLIB_HOME (untrained if `mmlib zoo prepare` has not run)."""
    from mmlib.clip import load_clip

    return load_clip("mmlib:tiny-clip", device="cpu")
