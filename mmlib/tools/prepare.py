"""`mmlib zoo prepare`: make every model of a profile before a class, side by side.

The zoo makes any one model when it is first needed; this schedules all of them at once, in
worker processes (`prepare_lanes`), each step as soon as what it needs is made, and records how
long each took (MMLIB_HOME/prepare-times.json, which `mmlib bench` and the docs read).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mmlib.env import cache_dir
from mmlib.recipes import TINY_MODELS
from mmlib.store.checkpoints import model_dir_complete
from mmlib.store.downloads import FULL_FILES, download_full
from mmlib.store.weights import WeightsNotFoundError
from mmlib.tiny_generators import (
    dalle_dir,
    unclip_decoder_dir,
    unclip_prior_dir,
    vqgan_clip_results_dir,
)
from mmlib.tiny_models import (
    judge_classifier_dir,
    tiny_bpe_path,
    tiny_clip_dir,
    tiny_vqgan_dir,
    training_device,
)
from mmlib.zoo import get_profile, tiny_folders

log = logging.getLogger(__name__)


# What the tiny profile makes, the longest chain first (the VQGAN, then the token model on its
# tokens), and what each needs made before it. A free lane takes the first step that is ready.
PREPARE_STEPS: dict[str, tuple[str, ...]] = {
    "tiny-vqgan": (),
    "tiny-dalle": ("tiny-vqgan",),
    "tiny-clip": (),
    "tiny-clip-b": (),
    "judge-clip": (),
    "judge-classifier": (),
    "unclip-decoder": ("tiny-clip", "tiny-vqgan"),
    "vqgan-clip-results": (
        "tiny-clip",
        "tiny-clip-b",
        "tiny-vqgan",
        "judge-clip",
        "judge-classifier",
    ),
    "unclip-prior": ("tiny-clip",),
}
TIMES_FILE = "prepare-times.json"


def _make_step(name: str, home: str | os.PathLike | None = None) -> Path:
    if name in TINY_MODELS:
        return tiny_clip_dir(name, home)
    make = {
        "tiny-vqgan": tiny_vqgan_dir,
        "judge-classifier": judge_classifier_dir,
        "vqgan-clip-results": vqgan_clip_results_dir,
        "tiny-dalle": dalle_dir,
        "unclip-decoder": unclip_decoder_dir,
        "unclip-prior": unclip_prior_dir,
    }[name]
    return make(home)


def _lane_step(name: str, home: str | None, threads: int) -> tuple[str, float, str]:
    """Run one prepare step in a worker process; return (name, seconds, folder)."""
    torch.set_num_threads(threads)
    os.environ["TQDM_DISABLE"] = "1"  # the parent shows one bar for all steps
    start = time.perf_counter()
    folder = _make_step(name, home)
    return name, time.perf_counter() - start, str(folder)


def prepare_lanes() -> tuple[int, int]:
    """Return (trainings at once, threads each) for `prepare`: on a CPU, one training per core
    (up to 3; the tiny models gain little from a second thread, much from a second core); on a
    GPU one at a time. MMLIB_PREPARE_LANES=1 asks for one."""
    cores = os.cpu_count() or 1
    asked = os.environ.get("MMLIB_PREPARE_LANES", "")
    lanes = 1 if training_device().type == "cuda" else min(3, cores)
    if asked:
        if not asked.isdigit() or int(asked) < 1:
            raise ValueError(f"MMLIB_PREPARE_LANES={asked!r}; give a whole number >= 1")
        lanes = int(asked)
    return lanes, max(1, cores // lanes)


def prepare(profile: str | None = None, home: str | os.PathLike | None = None) -> dict:
    """Make sure every model of the profile is ready (train what is missing, load the rest);
    return {name: seconds it took}, also written to MMLIB_HOME/prepare-times.json.

    Steps that do not need each other run side by side in worker processes (`prepare_lanes`),
    each with its own seeds and thread count, so what they make does not depend on the order.
    """
    if get_profile(profile) == "full":
        if not download_full(home):  # it printed which files to fetch and where to put them
            raise WeightsNotFoundError(
                "the full profile's weights are not all on this machine: fetch the files named "
                "above and put them where it says, then run `mmlib zoo prepare full` again"
            )
        return {item.name: 0.0 for item in FULL_FILES}
    tiny_bpe_path(home)  # written once here, not by several workers at once
    todo = [n for n in PREPARE_STEPS if not model_dir_complete(tiny_folders(home)[n])]
    lanes, threads = prepare_lanes()
    times, start = {}, time.perf_counter()
    if todo:
        log.info("preparing %s: %d at a time, %d thread(s) each", todo, lanes, threads)
    bar = tqdm(
        total=len(PREPARE_STEPS),
        desc="zoo prepare",
        unit="model",
        initial=len(PREPARE_STEPS) - len(todo),
    )
    if lanes == 1 or len(todo) < 2:
        for name in list(todo):
            tick = time.perf_counter()
            _make_step(name, home)
            times[name] = time.perf_counter() - tick
            bar.update()
    else:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
        with ProcessPoolExecutor(lanes, mp_context=context) as pool:
            running = {}
            waiting = list(todo)
            while waiting or running:
                for name in [n for n in waiting if not set(PREPARE_STEPS[n]) & set(todo)]:
                    if len(running) < lanes:
                        waiting.remove(name)
                        home_ = str(home) if home is not None else None
                        running[pool.submit(_lane_step, name, home_, threads)] = name
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    name, times[name], _ = future.result()  # a worker's error is raised here
                    todo.remove(name)
                    del running[future]
                    bar.set_postfix_str(f"{name} {times[name]:.0f} s")
                    bar.update()
    bar.close()
    for name, folder in tiny_folders(home).items():
        note = f" ({times[name]:.0f} s)" if name in times else ""
        print(f"{name}: {folder}{note}")
    if times:
        times["wall"] = time.perf_counter() - start
        print(f"prepared in {times['wall']:.0f} s ({lanes} at a time, {threads} thread(s) each)")
        path = cache_dir(home) / TIMES_FILE
        path.write_text(json.dumps({**times, "lanes": lanes, "threads": threads}, indent=1))
    return times
