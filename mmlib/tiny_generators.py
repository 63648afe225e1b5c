"""The course's tiny generators (notebooks 05-07), each made once and cached as the tiny models
are (`mmlib.tiny_models`): VQGAN+CLIP's judged benchmark, the DALL-E-style token transformer,
and unCLIP's prior and diffusion decoder. A folder's name hashes its recipe and the folders of
the models it was made from, so a retrained CLIP or VQGAN makes its generators again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path

import torch

from mmlib import dalle_training, generate, judge, recipes, unclip, unclip_training
from mmlib.env import get_device
from mmlib.store.checkpoints import load_weights, save_model_dir, state_dict_cpu
from mmlib.store.clip_loading import load_clip
from mmlib.store.model_cache import (
    make_once,
    model_folder,
    model_key,
    provenance,
    read_made,
    runs_folder,
)
from mmlib.tiny_models import (
    classifier_folder,
    clip_folder,
    generation_clips,
    get_judges,
    judge_classifier_dir,
    load_tiny_vqgan,
    tiny_clip_dir,
    tiny_tokenizer,
    tiny_vqgan_dir,
    training_device,
    vqgan_folder,
)
from mmlib.training import recipe
from mmlib.transformer import load_transformer, save_transformer

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# VQGAN+CLIP's benchmark (notebook 05), generated and judged once
# ---------------------------------------------------------------------------------------------


def vqgan_clip_results_dir(home: str | os.PathLike | None = None) -> Path:
    """Return the folder of VQGAN+CLIP's benchmark: the 20 `judge.benchmark_pairs()` generated
    with the tiny profile (best of 2 starts by the generator's own CLIPs) and judged twice
    (made on first use; notebooks 05 and 06 read it)."""
    config = generate.GenerateConfig(**recipes.generation_settings("tiny"))
    pairs = judge.benchmark_pairs()
    for name in ("tiny-clip", "tiny-clip-b", "judge-clip"):  # what it needs, made first
        tiny_clip_dir(name, home)
    tiny_vqgan_dir(home), judge_classifier_dir(home)
    folder = vqgan_clip_folder(home)

    def make() -> None:
        dev = training_device()
        log.info("generating the VQGAN+CLIP benchmark (%d prompts), once, then cached", len(pairs))
        results = generate.run_benchmark(
            load_tiny_vqgan(dev),
            generation_clips(dev),
            get_judges(device=dev),
            pairs,
            config,
            best_of=recipes.VQGAN_CLIP_BEST_OF,
            device=dev,
        )
        images = results.pop("images")
        info = {"name": "vqgan-clip-results", **provenance(dev), **results}
        save_model_dir(folder, {"images.safetensors": {"images": images}}, info)

    return make_once(folder, make)


def vqgan_clip_folder(home=None) -> Path:
    inputs = [
        clip_folder("tiny-clip", home).name,
        clip_folder("tiny-clip-b", home).name,
        vqgan_folder(home).name,
        clip_folder("judge-clip", home).name,
        classifier_folder(home).name,
    ]
    key = model_key(
        "vqgan-clip-results",
        asdict(generate.GenerateConfig(**recipes.generation_settings("tiny"))),
        pairs=judge.benchmark_pairs(),
        models=inputs,
        best_of=recipes.VQGAN_CLIP_BEST_OF,
    )
    return model_folder(key, home)


def vqgan_clip_results(home: str | os.PathLike | None = None) -> dict:
    """Return VQGAN+CLIP's cached benchmark: pairs, prompts, images, each judge's verdicts."""
    folder = vqgan_clip_results_dir(home)
    results = read_made(folder, ("images.safetensors",))
    results["images"] = load_weights(folder / "images.safetensors")["images"]
    results["pairs"] = [tuple(p) for p in results["pairs"]]
    for name in ("judge_clip", "classifier"):
        results[name]["predictions"] = [tuple(p) for p in results[name]["predictions"]]
    return results


# ---------------------------------------------------------------------------------------------
# The token transformer (notebook 06)
# ---------------------------------------------------------------------------------------------


def dalle_dir(home: str | os.PathLike | None = None) -> Path:
    """Return the folder of the course's DALL-E-style token transformer (trained on first use
    on the tiny VQGAN's tokens of held-out-split scenes in the world DalleTrainConfig picks).

    It needs only the VQGAN, so `prepare` trains it beside the CLIPs. How good it is: notebook 06
    measures it with both judges, and `mmlib bench dalle` measures the recipe over seeds.
    """
    config, training = recipes.token_model(), recipes.token_model_training()
    tiny_vqgan_dir(home)
    folder = dalle_folder(home)

    def make() -> None:
        dev = training_device()
        log.info("training the token transformer: %d steps, once, then cached", training.steps)
        vqgan = load_tiny_vqgan(dev)
        runs = runs_folder(folder)  # checkpoints: an interrupted run resumes
        model, history = dalle_training.train_dalle(
            config, training, vqgan, tiny_tokenizer(), folder=runs, device=dev
        )
        info = {
            "name": "tiny-dalle",
            **provenance(dev),
            "history": history.records,
            "train_seconds": history.last("seconds"),
            "training": asdict(training),
        }
        save_transformer(folder, model, info)

    return make_once(folder, make)


def dalle_folder(home=None) -> Path:
    key = model_key(
        "tiny-dalle",
        asdict(recipes.token_model()),
        training=recipe(recipes.token_model_training()),
        vqgan=vqgan_folder(home).name,
        tokenizer=recipes.TINY_BPE_FILE,
    )
    return model_folder(key, home)


def get_dalle(device=None):
    """Return the course's trained token transformer (mmlib.transformer.TokenTransformer)."""
    folder = dalle_dir()
    read_made(folder, ("model.safetensors",))
    return load_transformer(folder, tiny_tokenizer(), device=device)


def tiny_dalle_info() -> dict:
    """Return how the token transformer was made: history, seconds, its training recipe."""
    return read_made(dalle_dir())


# ---------------------------------------------------------------------------------------------
# unCLIP: the prior and the diffusion decoder (notebook 07)
# ---------------------------------------------------------------------------------------------


def unclip_prior_dir(home: str | os.PathLike | None = None) -> Path:
    """Return the folder of unCLIP's prior (text embedding -> image embedding of the course's
    CLIP), trained on first use on held-out-split scenes of `unclip.WORLD`."""
    return _unclip_dir("unclip-prior", home)


def unclip_decoder_dir(home: str | os.PathLike | None = None) -> Path:
    """Return the folder of unCLIP's decoder (CLIP image embedding -> tiny-VQGAN latents),
    trained on first use on held-out-split scenes of `unclip.WORLD`."""
    return _unclip_dir("unclip-decoder", home)


def _unclip_dir(name: str, home) -> Path:
    tiny_clip_dir(recipes.UNCLIP_CLIP, home)
    if name == "unclip-decoder":
        tiny_vqgan_dir(home)
    folder = unclip_folder(name, home)
    training = recipes.unclip_train_config(name)

    def make() -> None:
        dev = training_device()
        log.info(
            "training unCLIP's %s: %d steps, once, then cached",
            name.removeprefix("unclip-"),
            training.steps,
        )
        clip = load_clip(f"mmlib:{recipes.UNCLIP_CLIP}", device=dev)
        runs = runs_folder(folder)
        if name == "unclip-prior":
            net, history = unclip_training.train_prior(clip, training, folder=runs, device=dev)
        else:
            vqgan = load_tiny_vqgan(dev)
            net, history = unclip_training.train_decoder(
                clip, vqgan, training, folder=runs, device=dev
            )
        _save_unclip(folder, name, net, history, training, dev)

    return make_once(folder, make)


def unclip_folder(name: str, home=None) -> Path:
    training = recipes.unclip_train_config(name)
    inputs = {"clip": clip_folder(recipes.UNCLIP_CLIP, home).name}
    if name == "unclip-decoder":  # what it draws, from what it learns to predict
        inputs.update(vqgan=vqgan_folder(home).name, predicts=unclip.DECODER_PREDICTS)
    key = model_key(
        name,
        asdict(recipes.unclip_network(name)),
        training=recipe(training),
        world=unclip.WORLD,
        schedule=unclip.SCHEDULE_STEPS,
        **inputs,
    )
    return model_folder(key, home)


def _save_unclip(folder: Path, name: str, net, history, training, dev) -> None:
    info = {
        "name": name,
        **provenance(dev),
        "network": asdict(recipes.unclip_network(name)),
        "training": asdict(training),
        "history": history.records,
        "train_seconds": history.last("seconds"),
        "data_seconds": history.last("data_seconds"),
    }
    # Stored in float16 (loaded back into float32): half the bytes in the model pack, which
    # stays under its 40 MB; a rounding of the weights, not another model.
    weights = {k: v.half() for k, v in state_dict_cpu(net).items()}
    save_model_dir(folder, {"model.safetensors": weights}, {**info, "stored_as": "float16"})


def get_unclip(device=None) -> unclip.UnCLIP:
    """Return the course's unCLIP: its CLIP (the course's), prior, decoder and tiny VQGAN, in
    eval mode."""
    dev = get_device(device)
    prior = _load_unclip(
        unclip_prior_dir(), unclip.VectorDenoiser(recipes.unclip_network("unclip-prior"))
    )
    decoder = _load_unclip(
        unclip_decoder_dir(), unclip.LatentDecoder(recipes.unclip_network("unclip-decoder"))
    )
    clip = load_clip(f"mmlib:{recipes.UNCLIP_CLIP}", device=dev)
    return unclip.UnCLIP(clip, prior.to(dev), decoder.to(dev), load_tiny_vqgan(dev))


def _load_unclip(folder: Path, net: torch.nn.Module) -> torch.nn.Module:
    read_made(folder, ("model.safetensors",))
    net.load_state_dict(load_weights(folder / "model.safetensors"))
    return net.eval()


def tiny_unclip_info() -> dict[str, dict]:
    """Return how unCLIP's two models were made: {"prior": ..., "decoder": ...} (history,
    seconds, recipe)."""
    return {"prior": read_made(unclip_prior_dir()), "decoder": read_made(unclip_decoder_dir())}
