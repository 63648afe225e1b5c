"""Everything that starts worker processes works whatever the start method: fork (Linux),
spawn (macOS, Windows) or forkserver (Linux from Python 3.14). `make test` runs this file once
more with MMLIB_START_METHOD=spawn, so what a worker receives must pickle."""

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmlib import tiny_models
from mmlib.clip import encode_images
from mmlib.contrastive import ClipTrainConfig, train_clip
from mmlib.store import model_cache
from mmlib.store.checkpoints import save_model_dir
from mmlib.store.clip_loading import load_clip
from mmlib.toyworld import render_image
from mmlib.world_data import ShapesWorld

pytestmark = pytest.mark.workers


def test_the_start_method_is_the_one_asked_for():
    wanted = os.environ.get("MMLIB_START_METHOD")
    assert multiprocessing.get_start_method() == (wanted or multiprocessing.get_start_method())


def test_clip_training_with_worker_processes_trains_the_same_model_as_without():
    models = []
    for workers in (0, 1, 2):
        torch.manual_seed(0)
        model = tiny_models.new_tiny_clip(0)
        config = ClipTrainConfig(steps=3, batch_size=8, eval_every=0, num_workers=workers)
        train_clip(model, tiny_models.tiny_tokenizer(), config, progress=False, device="cpu")
        models.append(model.state_dict())
    for other in models[1:]:
        for name, value in models[0].items():
            assert torch.equal(value, other[name]), name


def test_encode_images_with_worker_processes_gives_the_same_features(tmp_home, tmp_path):
    model, preprocess, _ = load_clip(
        f"local-dir:{tiny_models.tiny_clip_dir(train=False)}", device="cpu"
    )
    world = ShapesWorld(12, seed=3)
    paths = []
    for i in range(12):
        paths.append(tmp_path / f"{i}.png")
        render_image(world.scene(i)).save(paths[-1])
    alone = encode_images(model, preprocess, paths, batch_size=5, progress=False)
    helped = encode_images(model, preprocess, paths, batch_size=5, num_workers=2, progress=False)
    tensors = encode_images(model, None, world, batch_size=5, num_workers=2, progress=False)
    assert torch.allclose(alone, helped, atol=1e-6) and tensors.shape == alone.shape


def _make_slowly(folder: str, log: str) -> None:
    """Run in a child process: make a model folder (slowly) through the cache's lock (`model_cache.make_once`)."""

    def make() -> None:
        with open(log, "a") as fh:
            fh.write(f"made by {os.getpid()}\n")
        time.sleep(1.0)
        save_model_dir(folder, {}, {"name": "slow"})

    model_cache.make_once(Path(folder), make)


def test_two_processes_preparing_one_model_make_it_once(tmp_path):
    folder, log = str(tmp_path / "models" / "slow"), str(tmp_path / "log.txt")
    ctx = multiprocessing.get_context()  # fork, spawn or forkserver: whatever is in use
    procs = [ctx.Process(target=_make_slowly, args=(folder, log)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(Path(log).read_text().splitlines()) == 1
    assert (Path(folder) / "mmlib.json").is_file()


@pytest.mark.slow
def test_the_train_clip_command_runs_under_spawn(tmp_path):
    env = {**os.environ, "MMLIB_START_METHOD": "spawn", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "mmlib", "train", "clip", "--out", str(tmp_path / "run")]
    cmd += ["--steps", "5", "--batch-size", "16", "--eval-every", "0", "--workers", "1"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "held-out" in done.stdout
    assert load_clip(f"local-dir:{tmp_path / 'run' / 'model'}").model is not None
