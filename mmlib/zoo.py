"""The profiles: which model each notebook gets, and the course's tiny models, made once and cached.

- ``tiny`` (default): small models made by the course on the shapes world (three tiny CLIPs, a
  tiny VQGAN, a token transformer, the judges' classifier) and VQGAN+CLIP's cached benchmark.
  Each lives in a folder under ``MMLIB_HOME/models`` named by its *recipe*: the model config,
  what of the training config decides the weights (`training.recipe`: not when it logs,
  evaluates or checkpoints), the seed, the split and mmlib's version, hashed (`model_key`). The tiny
  CLIPs are open_clip ``local-dir:`` folders, so they load like any OpenCLIP model; every folder
  holds ``mmlib.json`` saying how, where and how fast it was made. The tiny CLIPs are registered
  with `mmlib.clip` as ``mmlib:tiny-clip``, ``mmlib:judge-clip`` and ``mmlib:tiny-clip-b``.
- ``full``: pretrained OpenCLIP ViT-B-32 and the official taming VQGAN (`mmlib.store.downloads`).

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
import hashlib
import io
import json
import logging
import os
from copy import deepcopy
from dataclasses import asdict
from functools import partial
from pathlib import Path

import open_clip
import torch
from filelock import FileLock
from open_clip.tokenizer import default_bpe

from mmlib import (
    __version__,
    dalle_training,
    generate,
    judge,
    recipes,
    toyworld,
    unclip,
    unclip_training,
)
from mmlib.contrastive import train_clip
from mmlib.env import MMLibError, cache_dir, get_device
from mmlib.images import SAMPLE_PHOTOS, sample_photos
from mmlib.store.checkpoints import (
    load_weights,
    model_dir_complete,
    read_model_dir,
    save_model_dir,
    state_dict_cpu,
)
from mmlib.store.clip_loading import load_clip, register_model, save_clip
from mmlib.store.downloads import (
    FULL_CLIP,
    FULL_FILES,
    download_instructions,
    find_full_file,
)
from mmlib.store.weights import WeightsNotFoundError
from mmlib.training import recipe
from mmlib.transformer import load_transformer, save_transformer
from mmlib.vqgan import VQGAN, load_vqgan
from mmlib.vqgan_training import (
    VQGANTrainConfig,
    evaluate_vqgan,
    new_tiny_vqgan,
    train_vqgan,
)
from mmlib.zeroshot import evaluate_shapes

log = logging.getLogger(__name__)

PROFILES = ("tiny", "full")


def get_profile(profile: str | None = None) -> str:
    """Return the profile to use: `profile` if given, else `MMLIB_PROFILE`, else 'tiny'."""
    chosen = profile if profile is not None else os.environ.get("MMLIB_PROFILE", "tiny")
    chosen = str(chosen).strip().lower()
    if chosen not in PROFILES:
        raise ValueError(f"profile={chosen!r} is not known; choose one of {list(PROFILES)}")
    return chosen


def training_device() -> torch.device:
    """Return where tiny models train: the chosen device if it is a CUDA GPU, else the CPU."""
    dev = get_device()
    return dev if dev.type == "cuda" else torch.device("cpu")


def _provenance(dev: torch.device) -> dict:
    return {
        "mmlib_version": __version__,
        "device": str(dev),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------------------
# Recipes and the cache
# ---------------------------------------------------------------------------------------------


def model_key(name: str, config: dict, **parts) -> str:
    """Return a folder name for a model: its name plus a hash of config, parts and mmlib version."""
    blob = json.dumps({"config": config, "version": __version__, **parts}, sort_keys=True)
    return f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


class NotPreparedError(MMLibError):
    """A model is not in MMLIB_HOME and this machine was told not to train (MMLIB_NO_TRAINING)."""


def _make_once(folder: Path, make) -> Path:
    """Run `make()` unless `folder` is complete; a file lock lets one process do it at a time
    (threads, forked or spawned processes, other notebooks); return the folder.

    With MMLIB_NO_TRAINING=1 (a workshop laptop that should only ever import a pack), a missing
    model is an error that says how to get it, instead of minutes of training.
    """
    if not model_dir_complete(folder):
        if os.environ.get("MMLIB_NO_TRAINING", "") not in ("", "0"):
            raise NotPreparedError(
                f"{folder.name} is not in {str(folder.parent)!r} and MMLIB_NO_TRAINING is set: "
                f"import the course's model pack (`mmlib zoo import FILE|URL`), or unset "
                f"MMLIB_NO_TRAINING to train it here (`mmlib zoo prepare`)."
            )
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock"):
            if not model_dir_complete(folder):  # another process may have made it meanwhile
                make()
    return folder


def _read(folder: Path, needs: tuple[str, ...] = ()) -> dict:
    """Return the mmlib.json of a cached model, checking its files (a damaged one: say so)."""
    hint = f"Delete the folder {str(folder)!r}: `mmlib zoo prepare` makes it again."
    return read_model_dir(folder, needs, hint)


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
    folder = _clip_folder(name, home, train)
    _make_once(folder, lambda: _make_tiny_clip(folder, name, train, home))
    if not train:
        log.warning("%s is UNTRAINED (random weights): its answers mean nothing.", name)
    return folder


def _clip_folder(name: str, home=None, train: bool = True) -> Path:
    training = recipe(recipes.tiny_train_config(name))  # refuses a name that is no tiny model
    parts = {**asdict(recipes.TINY_MODELS[name]), "training": training, "trained": train}
    return cache_dir(home) / "models" / model_key(name, recipes.TINY_CLIP_CONFIG, **parts)


def _make_tiny_clip(folder: Path, name: str, train: bool, home) -> None:
    spec = recipes.TINY_MODELS[name]
    model = new_tiny_clip(spec.seed)
    dev = training_device()
    info = {"name": name, "trained": train, **asdict(spec), **_provenance(dev)}
    if train:
        config = recipes.tiny_train_config(name)
        tokenizer = tiny_tokenizer()
        log.info("training %s (%s): %d steps, once, then cached", name, spec.purpose, config.steps)
        runs = cache_dir(home) / "runs" / folder.name  # checkpoints: an interrupted run resumes
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
    register_model(_name, partial(tiny_clip_dir, _name), "mmlib.zoo", _spec.purpose)


def tiny_clip_info(name: str = "tiny-clip") -> dict:
    """Return how a tiny CLIP was made: its training history and final zero-shot accuracy."""
    return _read(tiny_clip_dir(name))


# ---------------------------------------------------------------------------------------------
# The tiny VQGAN and the judges' classifier
# ---------------------------------------------------------------------------------------------


def tiny_vqgan_dir(home: str | os.PathLike | None = None) -> Path:
    """Return the folder of the tiny VQGAN (config + safetensors), training it on first use."""
    folder = _vqgan_folder(home)
    return _make_once(folder, lambda: _make_tiny_vqgan(folder, recipes.vqgan_training(), home))


def _vqgan_folder(home=None) -> Path:
    key = model_key("tiny-vqgan", recipes.VQGAN_CONFIG, training=recipe(recipes.vqgan_training()))
    return cache_dir(home) / "models" / key


def _make_tiny_vqgan(folder: Path, config: VQGANTrainConfig, home) -> None:
    dev = training_device()
    model = new_tiny_vqgan(config.seed)
    log.info("training the tiny VQGAN: %d steps, once, then cached", config.steps)
    runs = cache_dir(home) / "runs" / folder.name
    history = train_vqgan(model, config, folder=runs, device=dev)
    final = evaluate_vqgan(model, n=512)
    info = {
        "name": "tiny-vqgan",
        "trained": True,
        **_provenance(dev),
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
    return _read(tiny_vqgan_dir())


def get_vqgan(profile: str | None = None, device=None, weights: str = "model.safetensors"):
    """Return the profile's VQGAN in eval mode: the tiny one, or the official f16 16384 one.

    For the tiny one, `weights` names the file of its folder to load.
    """
    if get_profile(profile) == "full":
        ckpt, config = (find_full_file(item) for item in FULL_FILES[1:3])
        if ckpt is None or config is None:
            raise WeightsNotFoundError(
                "the full profile's VQGAN is not on this machine.\n" + download_instructions()
            )
        return load_vqgan(config, ckpt, device=device)
    folder = tiny_vqgan_dir()
    _read(folder, (weights,))
    model = VQGAN(**recipes.VQGAN_CONFIG)
    model.load_state_dict(load_weights(folder / weights))
    return model.to(get_device(device)).eval()


def judge_classifier_dir(home: str | os.PathLike | None = None) -> Path:
    """Return the folder of the supervised shape/colour classifier (trained on first use)."""
    config = recipes.classifier_training()
    folder = _classifier_folder(home)

    def make() -> None:
        dev = training_device()
        log.info("training the judge classifier: %d steps, once, then cached", config.steps)
        model, history = judge.train_classifier(config, device=dev)
        info = {
            "name": "judge-classifier",
            **_provenance(dev),
            "accuracy": judge.classifier_accuracy(model),
            "history": history.records,
            "train_seconds": history.last("seconds"),
        }
        save_model_dir(folder, {"model.safetensors": state_dict_cpu(model)}, info)

    return _make_once(folder, make)


def _classifier_folder(home=None) -> Path:
    key = model_key("judge-classifier", recipe(recipes.classifier_training()))
    return cache_dir(home) / "models" / key


def get_judge_classifier(device=None) -> judge.ShapeColourNet:
    """Return the shape/colour classifier that judges generated pictures, in eval mode."""
    folder = judge_classifier_dir()
    _read(folder, ("model.safetensors",))
    model = judge.ShapeColourNet()
    model.load_state_dict(load_weights(folder / "model.safetensors"))
    return model.to(get_device(device)).eval()


def get_judges(device=None):
    """Return the two judges: (judge CLIP as (model, preprocess, tokenizer), classifier)."""
    return load_clip("mmlib:judge-clip", device=device), get_judge_classifier(device)


# ---------------------------------------------------------------------------------------------
# Profiles: the models each notebook gets
# ---------------------------------------------------------------------------------------------


def get_clip(profile: str | None = None, device=None):
    """Return (model, preprocess, tokenizer) of the profile's CLIP: the tiny one or ViT-B-32."""
    if get_profile(profile) == "full":
        return load_clip(FULL_CLIP[0], pretrained=FULL_CLIP[1], device=device)
    return load_clip("mmlib:tiny-clip", device=device)


def get_generation_clips(profile: str | None = None, device=None) -> list:
    """Return the CLIPs VQGAN+CLIP steers with: ViT-B-32 (full), or the two course CLIPs (tiny).

    Two tiny CLIPs (seeds 0 and 2, same data) ensembled as pixray does: a picture has to please
    both, so it can no longer pass on one model's quirks (notebook 05 measures the difference).
    """
    if get_profile(profile) == "full":
        return [get_clip("full", device=device)]
    return [get_clip("tiny", device=device), load_clip("mmlib:tiny-clip-b", device=device)]


def example_images(profile: str | None = None, n: int = 4):
    """Return (images, captions): shapes-world scenes for tiny, scikit-image photos for full."""
    if get_profile(profile) == "full":
        photos = sample_photos(list(SAMPLE_PHOTOS)[:n])
        return list(photos.values()), [SAMPLE_PHOTOS[name] for name in photos]
    pairs = [
        ("star", "red"),
        ("circle", "blue"),
        ("heart", "yellow"),
        ("square", "green"),
        ("cross", "white"),
        ("triangle", "orange"),
        ("star", "pink"),
        ("circle", "purple"),
    ][:n]
    images = [
        toyworld.render_image(toyworld.sample_scene(7, i, "all", "single", pair=pair))
        for i, pair in enumerate(pairs)
    ]
    return images, [f"{toyworld.article(colour)} {shape}" for shape, colour in pairs]


# ---------------------------------------------------------------------------------------------
# Cached results: VQGAN+CLIP's benchmark, the token transformer
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
    folder = _vqgan_clip_folder(home)

    def make() -> None:
        dev = training_device()
        log.info("generating the VQGAN+CLIP benchmark (%d prompts), once, then cached", len(pairs))
        results = generate.run_benchmark(
            get_vqgan("tiny", device=dev),
            get_generation_clips("tiny", device=dev),
            get_judges(device=dev),
            pairs,
            config,
            best_of=recipes.VQGAN_CLIP_BEST_OF,
            device=dev,
        )
        images = results.pop("images")
        info = {"name": "vqgan-clip-results", **_provenance(dev), **results}
        save_model_dir(folder, {"images.safetensors": {"images": images}}, info)

    return _make_once(folder, make)


def _vqgan_clip_folder(home=None) -> Path:
    inputs = [
        _clip_folder("tiny-clip", home).name,
        _clip_folder("tiny-clip-b", home).name,
        _vqgan_folder(home).name,
        _clip_folder("judge-clip", home).name,
        _classifier_folder(home).name,
    ]
    key = model_key(
        "vqgan-clip-results",
        asdict(generate.GenerateConfig(**recipes.generation_settings("tiny"))),
        pairs=judge.benchmark_pairs(),
        models=inputs,
        best_of=recipes.VQGAN_CLIP_BEST_OF,
    )
    return cache_dir(home) / "models" / key


def vqgan_clip_results(home: str | os.PathLike | None = None) -> dict:
    """Return VQGAN+CLIP's cached benchmark: pairs, prompts, images, each judge's verdicts."""
    folder = vqgan_clip_results_dir(home)
    results = _read(folder, ("images.safetensors",))
    results["images"] = load_weights(folder / "images.safetensors")["images"]
    results["pairs"] = [tuple(p) for p in results["pairs"]]
    for name in ("judge_clip", "classifier"):
        results[name]["predictions"] = [tuple(p) for p in results[name]["predictions"]]
    return results


def dalle_dir(home: str | os.PathLike | None = None) -> Path:
    """Return the folder of the course's DALL-E-style token transformer (trained on first use
    on the tiny VQGAN's tokens of held-out-split scenes in the world DalleTrainConfig picks).

    It needs only the VQGAN, so `prepare` trains it beside the CLIPs. How good it is: notebook 06
    measures it with both judges, and `mmlib bench dalle` measures the recipe over seeds.
    """
    config, training = recipes.token_model(), recipes.token_model_training()
    tiny_vqgan_dir(home)
    folder = _dalle_folder(home)

    def make() -> None:
        dev = training_device()
        log.info("training the token transformer: %d steps, once, then cached", training.steps)
        vqgan = get_vqgan("tiny", device=dev)
        runs = cache_dir(home) / "runs" / folder.name  # checkpoints: an interrupted run resumes
        model, history = dalle_training.train_dalle(
            config, training, vqgan, tiny_tokenizer(), folder=runs, device=dev
        )
        info = {
            "name": "tiny-dalle",
            **_provenance(dev),
            "history": history.records,
            "train_seconds": history.last("seconds"),
            "training": asdict(training),
        }
        save_transformer(folder, model, info)

    return _make_once(folder, make)


def _dalle_folder(home=None) -> Path:
    key = model_key(
        "tiny-dalle",
        asdict(recipes.token_model()),
        training=recipe(recipes.token_model_training()),
        vqgan=_vqgan_folder(home).name,
        tokenizer=recipes.TINY_BPE_FILE,
    )
    return cache_dir(home) / "models" / key


def get_dalle(device=None):
    """Return the course's trained token transformer (mmlib.transformer.TokenTransformer)."""
    folder = dalle_dir()
    _read(folder, ("model.safetensors",))
    return load_transformer(folder, tiny_tokenizer(), device=device)


def tiny_dalle_info() -> dict:
    """Return how the token transformer was made: history, seconds, its training recipe."""
    return _read(dalle_dir())


# ---------------------------------------------------------------------------------------------
# unCLIP: the prior and the diffusion decoder (notebook 07)
# ---------------------------------------------------------------------------------------------


def unclip_prior_dir(home: str | os.PathLike | None = None) -> Path:
    """Return the folder of unCLIP's prior (text embedding -> image embedding of the course's
    CLIP), trained on first use on held-out-split scenes of `unclip.WORLD`."""
    tiny_clip_dir(recipes.UNCLIP_CLIP, home)
    folder = _unclip_folder("unclip-prior", home)
    training = recipes.unclip_training("unclip-prior")

    def make() -> None:
        dev = training_device()
        log.info("training unCLIP's prior: %d steps, once, then cached", training.steps)
        clip = load_clip(f"mmlib:{recipes.UNCLIP_CLIP}", device=dev)
        runs = cache_dir(home) / "runs" / folder.name
        net, history = unclip_training.train_prior(clip, training, folder=runs, device=dev)
        _save_unclip(folder, "unclip-prior", net, history, training, dev)

    return _make_once(folder, make)


def unclip_decoder_dir(home: str | os.PathLike | None = None) -> Path:
    """Return the folder of unCLIP's decoder (CLIP image embedding -> tiny-VQGAN latents),
    trained on first use on held-out-split scenes of `unclip.WORLD`."""
    tiny_clip_dir(recipes.UNCLIP_CLIP, home), tiny_vqgan_dir(home)
    folder = _unclip_folder("unclip-decoder", home)
    training = recipes.unclip_training("unclip-decoder")

    def make() -> None:
        dev = training_device()
        log.info("training unCLIP's decoder: %d steps, once, then cached", training.steps)
        clip = load_clip(f"mmlib:{recipes.UNCLIP_CLIP}", device=dev)
        runs = cache_dir(home) / "runs" / folder.name
        net, history = unclip_training.train_decoder(
            clip, get_vqgan("tiny", device=dev), training, folder=runs, device=dev
        )
        _save_unclip(folder, "unclip-decoder", net, history, training, dev)

    return _make_once(folder, make)


def _unclip_folder(name: str, home=None) -> Path:
    training = recipes.unclip_training(name)
    inputs = {"clip": _clip_folder(recipes.UNCLIP_CLIP, home).name}
    if name == "unclip-decoder":  # what it draws, from what it learns to predict
        inputs.update(vqgan=_vqgan_folder(home).name, predicts=unclip.DECODER_PREDICTS)
    key = model_key(
        name,
        asdict(recipes.unclip_network(name)),
        training=recipe(training),
        world=unclip.WORLD,
        schedule=unclip.SCHEDULE_STEPS,
        **inputs,
    )
    return cache_dir(home) / "models" / key


def _save_unclip(folder: Path, name: str, net, history, training, dev) -> None:
    info = {
        "name": name,
        **_provenance(dev),
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
    return unclip.UnCLIP(clip, prior.to(dev), decoder.to(dev), get_vqgan("tiny", device=dev))


def _load_unclip(folder: Path, net: torch.nn.Module) -> torch.nn.Module:
    _read(folder, ("model.safetensors",))
    net.load_state_dict(load_weights(folder / "model.safetensors"))
    return net.eval()


def tiny_unclip_info() -> dict[str, dict]:
    """Return how unCLIP's two models were made: {"prior": ..., "decoder": ...} (history,
    seconds, recipe)."""
    return {"prior": _read(unclip_prior_dir()), "decoder": _read(unclip_decoder_dir())}


# ---------------------------------------------------------------------------------------------
# Preparing a profile
# ---------------------------------------------------------------------------------------------


def tiny_folders(home: str | os.PathLike | None = None) -> dict[str, Path]:
    """Return {name: folder} of everything the tiny profile caches (nothing is made: the
    folders may not exist yet; `PREPARE_STEPS` says in which order `prepare` makes them)."""
    return {
        **{name: _clip_folder(name, home) for name in recipes.TINY_MODELS},
        "tiny-vqgan": _vqgan_folder(home),
        "judge-classifier": _classifier_folder(home),
        "vqgan-clip-results": _vqgan_clip_folder(home),
        "tiny-dalle": _dalle_folder(home),
        "unclip-decoder": _unclip_folder("unclip-decoder", home),
        "unclip-prior": _unclip_folder("unclip-prior", home),
    }


def missing_models(home: str | os.PathLike | None = None) -> list[str]:
    """Return the names of the tiny profile's models and results not yet made in MMLIB_HOME."""
    return [name for name, f in tiny_folders(home).items() if not model_dir_complete(f)]


def prepared_summary(home: str | os.PathLike | None = None) -> str:
    """Return 'all 9' or which of the tiny profile's models are still to be made."""
    missing = missing_models(home)
    if not missing:
        return f"all {len(tiny_folders(home))}"
    return f"not yet: {', '.join(missing)} (`mmlib zoo prepare` makes them)"
