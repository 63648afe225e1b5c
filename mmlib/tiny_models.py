"""The course's tiny models for notebooks 01-04 and the judges: three tiny CLIPs, a tiny VQGAN
and the judges' shape/colour classifier, each made once from its recipe (`mmlib.recipes`) and
cached in a folder under ``MMLIB_HOME/models`` named by that recipe (`store.model_cache`).

The tiny CLIPs are open_clip ``local-dir:`` folders, so they load like any OpenCLIP model; every
folder holds ``mmlib.json`` saying how, where and how fast it was made. They are registered with
`mmlib.store.clip_loading` as ``mmlib:tiny-clip``, ``mmlib:judge-clip`` and ``mmlib:tiny-clip-b``.

Where tiny models train: on a CUDA GPU when there is one (a Colab VM trains them in a fraction
of its 2 CPUs' time), else on the CPU (Apple's MPS is used for inference only: the training
loops' fused optimisers and a few ops are CPU/CUDA-only). ``MMLIB_DEVICE=cpu`` forces the CPU.

What is reproducible: a recipe names what a model *is*, not its bits. On one machine, the same
torch version and thread count, a recipe trains bit-identical weights on the CPU. Another CPU,
another thread count or a GPU trains different weights from the same recipe, which meet the
same goals (`mmlib bench train` measures the spread over seeds and splits). So the cache key
is the recipe alone, `mmlib.json` records the device, torch version and thread count a folder
was made with, and tests assert the goals, never one model's exact numbers.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
from copy import deepcopy
from dataclasses import asdict
from functools import partial
from pathlib import Path

import open_clip
import torch
from open_clip.tokenizer import default_bpe

from mmlib import judge, recipes
from mmlib.contrastive import train_clip
from mmlib.env import cache_dir, get_device
from mmlib.store.checkpoints import load_weights, save_model_dir, state_dict_cpu
from mmlib.store.clip_loading import load_clip, register_model, save_clip
from mmlib.store.model_cache import (
    make_once,
    model_folder,
    model_key,
    provenance,
    read_made,
    runs_folder,
)
from mmlib.training import recipe
from mmlib.vqgan import VQGAN
from mmlib.vqgan_training import VQGANTrainConfig, evaluate_vqgan, new_tiny_vqgan, train_vqgan
from mmlib.zeroshot import evaluate_shapes

log = logging.getLogger(__name__)


def training_device() -> torch.device:
    """Return where tiny models train: the chosen device if it is a CUDA GPU, else the CPU."""
    dev = get_device()
    return dev if dev.type == "cuda" else torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# The tiny CLIPs
# ---------------------------------------------------------------------------------------------


def new_tiny_clip(seed: int = 0) -> open_clip.CLIP:
    """Return a freshly initialised (untrained) CLIP of the tiny config, seeded."""
    torch.manual_seed(seed)
    model = open_clip.CLIP(**deepcopy(recipes.TINY_CLIP_CONFIG["model_cfg"]))
    model.visual.preprocess_cfg = dict(recipes.TINY_CLIP_CONFIG["preprocess_cfg"])
    return model


def tiny_bpe_path(home: str | os.PathLike | None = None) -> Path:
    """Return the tiny CLIPs' BPE file (the first recipes.TINY_BPE_MERGES merges of open_clip's own),
    written once into MMLIB_HOME/tokenizers; the same bytes on every machine."""
    path = cache_dir(home) / "tokenizers" / recipes.TINY_BPE_FILE
    if not path.is_file():
        lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as gz:  # no timestamp
            gz.write("\n".join(lines[: recipes.TINY_BPE_MERGES + 1]).encode("utf-8"))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
    return path


def tiny_tokenizer() -> open_clip.SimpleTokenizer:
    """Return the tokenizer of the tiny CLIPs: CLIP's BPE with recipes.TINY_BPE_MERGES merges, cut to
    their context length."""
    text_cfg = recipes.TINY_CLIP_CONFIG["model_cfg"]["text_cfg"]
    return open_clip.SimpleTokenizer(
        bpe_path=str(tiny_bpe_path()), context_length=text_cfg["context_length"]
    )


def tiny_clip_dir(
    name: str = "tiny-clip", home: str | os.PathLike | None = None, train: bool = True
) -> Path:
    """Return the local-dir folder of a tiny CLIP, training and caching it on first use.

    The folder name is a hash of the model config, the training recipe, the seed, the split
    and mmlib's version: change any of them and a new model is trained. A file lock makes two
    notebooks (or `mmlib zoo prepare` runs) wait for one training instead of both training.
    With `train=False`, return an untrained model of the same config (for tests and demos).
    """
    folder = clip_folder(name, home, train)
    make_once(folder, lambda: _make_tiny_clip(folder, name, train, home))
    if not train:
        log.warning("%s is UNTRAINED (random weights): its answers mean nothing.", name)
    return folder


def clip_folder(name: str, home=None, train: bool = True) -> Path:
    training = recipe(recipes.tiny_train_config(name))  # refuses a name that is no tiny model
    parts = {**asdict(recipes.TINY_MODELS[name]), "training": training, "trained": train}
    return model_folder(model_key(name, recipes.TINY_CLIP_CONFIG, **parts), home)


def _make_tiny_clip(folder: Path, name: str, train: bool, home) -> None:
    spec = recipes.TINY_MODELS[name]
    model = new_tiny_clip(spec.seed)
    dev = training_device()
    info = {"name": name, "trained": train, **asdict(spec), **provenance(dev)}
    if train:
        config = recipes.tiny_train_config(name)
        tokenizer = tiny_tokenizer()
        log.info("training %s (%s): %d steps, once, then cached", name, spec.purpose, config.steps)
        runs = runs_folder(folder)  # checkpoints: an interrupted run resumes
        history = train_clip(model, tokenizer, config, folder=runs, device=dev)
        final = evaluate_shapes(
            model, None, tokenizer, per_pair=20, seed=4321, device=dev, split=spec.split
        )
        info.update(
            steps=config.steps,
            train_seconds=history.last("seconds"),
            zeroshot_seen=final["seen"],
            zeroshot_heldout=final["heldout"],
            history=history.records,
        )
    save_tiny_clip(folder, model, info)


def save_tiny_clip(folder: str | os.PathLike, model: open_clip.CLIP, info: dict) -> Path:
    """Write a CLIP of the tiny config as a local-dir folder, with its vocabulary file."""
    vocab = {recipes.TINY_BPE_FILE: tiny_bpe_path().read_bytes()}
    return save_clip(folder, model, recipes.TINY_CLIP_CONFIG, info, vocab)


for _name, _spec in recipes.TINY_MODELS.items():  # load_clip("mmlib:tiny-clip") and friends
    register_model(_name, partial(tiny_clip_dir, _name), "mmlib.tiny_models", _spec.purpose)


def tiny_clip_info(name: str = "tiny-clip") -> dict:
    """Return how a tiny CLIP was made: its training history and final zero-shot accuracy."""
    return read_made(tiny_clip_dir(name))


def generation_clips(device=None) -> list:
    """Return the two course CLIPs VQGAN+CLIP steers with in the tiny profile (seeds 0 and 2,
    same data), ensembled as pixray does: a picture has to please both, so it can no longer pass
    on one model's quirks (notebook 05 measures the difference)."""
    return [
        load_clip("mmlib:tiny-clip", device=device),
        load_clip("mmlib:tiny-clip-b", device=device),
    ]


# ---------------------------------------------------------------------------------------------
# The tiny VQGAN and the judges' classifier
# ---------------------------------------------------------------------------------------------


def tiny_vqgan_dir(home: str | os.PathLike | None = None) -> Path:
    """Return the folder of the tiny VQGAN (config + safetensors), training it on first use."""
    folder = vqgan_folder(home)
    return make_once(folder, lambda: _make_tiny_vqgan(folder, recipes.vqgan_training(), home))


def vqgan_folder(home=None) -> Path:
    key = model_key("tiny-vqgan", recipes.VQGAN_CONFIG, training=recipe(recipes.vqgan_training()))
    return model_folder(key, home)


def _make_tiny_vqgan(folder: Path, config: VQGANTrainConfig, home) -> None:
    dev = training_device()
    model = new_tiny_vqgan(config.seed)
    log.info("training the tiny VQGAN: %d steps, once, then cached", config.steps)
    runs = runs_folder(folder)
    history = train_vqgan(model, config, folder=runs, device=dev)
    final = evaluate_vqgan(model, n=512)
    info = {
        "name": "tiny-vqgan",
        "trained": True,
        **provenance(dev),
        "steps": config.steps,
        "train_seconds": history.last("seconds"),
        "psnr": final["psnr"],
        "codebook_used": final["codebook_used"],
        "perplexity": final["perplexity"],
        "history": history.records,
        "config": recipes.VQGAN_CONFIG,
    }
    save_model_dir(folder, {"model.safetensors": state_dict_cpu(model)}, info)


def tiny_vqgan_info() -> dict:
    """Return how the tiny VQGAN was made: history, PSNR and codebook use."""
    return read_made(tiny_vqgan_dir())


def load_tiny_vqgan(device=None, weights: str = "model.safetensors") -> VQGAN:
    """Return the tiny VQGAN in eval mode; `weights` names the file of its folder to load."""
    folder = tiny_vqgan_dir()
    read_made(folder, (weights,))
    model = VQGAN(**recipes.VQGAN_CONFIG)
    model.load_state_dict(load_weights(folder / weights))
    return model.to(get_device(device)).eval()


def judge_classifier_dir(home: str | os.PathLike | None = None) -> Path:
    """Return the folder of the supervised shape/colour classifier (trained on first use)."""
    config = recipes.classifier_training()
    folder = classifier_folder(home)

    def make() -> None:
        dev = training_device()
        log.info("training the judge classifier: %d steps, once, then cached", config.steps)
        model, history = judge.train_classifier(config, device=dev)
        info = {
            "name": "judge-classifier",
            **provenance(dev),
            "accuracy": judge.classifier_accuracy(model),
            "history": history.records,
            "train_seconds": history.last("seconds"),
        }
        save_model_dir(folder, {"model.safetensors": state_dict_cpu(model)}, info)

    return make_once(folder, make)


def classifier_folder(home=None) -> Path:
    key = model_key("judge-classifier", recipe(recipes.classifier_training()))
    return model_folder(key, home)


def get_judge_classifier(device=None) -> judge.ShapeColourNet:
    """Return the shape/colour classifier that judges generated pictures, in eval mode."""
    folder = judge_classifier_dir()
    read_made(folder, ("model.safetensors",))
    model = judge.ShapeColourNet()
    model.load_state_dict(load_weights(folder / "model.safetensors"))
    return model.to(get_device(device)).eval()


def get_judges(device=None):
    """Return the two judges: (judge CLIP as (model, preprocess, tokenizer), classifier)."""
    return load_clip("mmlib:judge-clip", device=device), get_judge_classifier(device)
