"""Shared fixtures: every test runs offline, and zoo tests get a private MMLIB_HOME.

Tests that need the course's trained models ask for `prepared` (or `tiny_clip`): under a bare
`pytest` on a machine where `mmlib zoo prepare` has not run, they are skipped with a message
that says so, never trained into your real MMLIB_HOME behind your back. `make test` prepares
first and sets MMLIB_REQUIRE_PREPARED=1, so there a missing model fails instead of skipping.

MMLIB_START_METHOD=spawn (or forkserver) runs the whole session with that start method for
worker processes, as macOS and Windows (or Python 3.14 on Linux) do; `make test` runs the
tests marked `workers` once more that way.
"""

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_configure(config):
    from mmlib.env import apply_start_method

    apply_start_method()


@pytest.fixture(scope="module")
def one_thread():
    """Sampling runs thousands of tiny ops; on a busy 2-core machine two threads wait on each
    other at every op (a 100x slow-down), one thread does not. A module that samples uses it
    for all its tests: `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer():
    """The tiny CLIPs' tokenizer (the token transformer reads captions with it)."""
    from mmlib.tiny_models import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture
def tmp_home(tmp_path, monkeypatch):
    """A fresh, empty MMLIB_HOME for tests that must not touch the prepared one."""
    home = tmp_path / "mmlib_home"
    monkeypatch.setenv("MMLIB_HOME", str(home))
    return home


def _fake_prepared_home(home):
    """Make a MMLIB_HOME whose tiny folders hold small stand-in files: enough to test what
    handles folders (packs, prepare's bookkeeping) without training anything."""
    import json

    from mmlib import zoo

    for name, folder in zoo.tiny_folders(home).items():
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(name.encode() * 1000)
        (folder / "mmlib.json").write_text(json.dumps({"name": name}))
    return home


@pytest.fixture
def fake_prepared_home():
    """A function that fills a MMLIB_HOME with stand-in model folders (see above)."""
    return _fake_prepared_home


@pytest.fixture(scope="session")
def prepared():
    """The prepared tiny profile of this run's MMLIB_HOME (skip, or fail under make test,
    when `mmlib zoo prepare` has not made it)."""
    from mmlib import zoo
    from mmlib.env import cache_dir

    missing = zoo.missing_models()
    if missing:
        message = (
            f"needs the course's prepared models; not in {cache_dir()}: {', '.join(missing)}. "
            f"Run `mmlib zoo prepare` first (`make test` does)."
        )
        if os.environ.get("MMLIB_REQUIRE_PREPARED", "") not in ("", "0"):
            pytest.fail(message)
        pytest.skip(message)
    return zoo


@pytest.fixture(scope="session")
def tiny_clip(prepared):
    """The trained tiny CLIP of this run's MMLIB_HOME."""
    return prepared.get_clip("tiny", device="cpu")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (scripts/gpu_check.sh runs these on one)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
