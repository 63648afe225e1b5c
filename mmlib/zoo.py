"""The profiles: which model each notebook gets, and the course's tiny models, made once and cached.

- ``tiny`` (default): small models made by the course on the shapes world (three tiny CLIPs, a
  tiny VQGAN, a token transformer, the judges' classifier) and VQGAN+CLIP's cached benchmark.
  Each lives in a folder under ``MMLIB_HOME/models`` named by its *recipe*: the model config,
  what of the training config decides the weights (`training.recipe`: not when it logs,
  evaluates or checkpoints), the seed, the split and mmlib's version, hashed (`model_key`). The tiny
  CLIPs are open_clip ``local-dir:`` folders, so they load like any OpenCLIP model; every folder
  holds ``mmlib.json`` saying how, where and how fast it was made. The tiny CLIPs are registered
  with `mmlib.clip` as ``mmlib:tiny-clip``, ``mmlib:judge-clip`` and ``mmlib:tiny-clip-b``.
- ``full``: pretrained OpenCLIP ViT-B-32 and the official taming VQGAN (`mmlib.downloads`).

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
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from copy import deepcopy
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import open_clip
import torch
from filelock import FileLock
from open_clip.tokenizer import default_bpe
from tqdm.auto import tqdm

from mmlib import __version__, dalle, generate, judge, toyworld, unclip
from mmlib.checkpoints import (
    load_weights,
    model_dir_complete,
    read_model_dir,
    save_model_dir,
    state_dict_cpu,
)
from mmlib.clip import load_clip, register_model, save_clip
from mmlib.contrastive import ClipTrainConfig, train_clip
from mmlib.diffusion import DenoiserConfig, UNetConfig
from mmlib.downloads import (
    FULL_CLIP,
    FULL_FILES,
    download_full,
    download_instructions,
    find_full_file,
)
from mmlib.env import MMLibError, cache_dir, get_device
from mmlib.images import SAMPLE_PHOTOS, sample_photos
from mmlib.training import recipe
from mmlib.transformer import TransformerConfig, load_transformer, save_transformer
from mmlib.vqgan import VQGAN, load_vqgan
from mmlib.vqgan_training import (
    TINY_VQGAN,
    VQGANTrainConfig,
    evaluate_vqgan,
    new_tiny_vqgan,
    train_vqgan,
)
from mmlib.weights import WeightsNotFoundError
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

# The tiny CLIPs read CLIP's own BPE tokens, with the first 8,192 of its 48,894 merges: every
# word of the shapes world is one token (a few plurals two), everyday words still tokenize (in
# more pieces), and the text embedding has 8,706 rows instead of 49,408, most of which no
# caption here would ever touch (it was 6.3 of the model's 7.4 million parameters; a model pack
# would mostly carry untrained rows). The vocabulary file travels inside each model folder.
TINY_BPE_MERGES = 8192
TINY_BPE_FILE = f"bpe_simple_vocab_{TINY_BPE_MERGES}.txt.gz"

# A small ModifiedResNet image tower (convolutions see small shapes better than 8x8 patches,
# at a fraction of a ViT's cost on a CPU) and a narrow 3-layer text transformer. The captions
# are at most 12 tokens with SOT and EOT, so the context is 12. Composition (held-out pairs)
# breaks in the image tower (zeroshot.shape_probe), so the text tower is kept small: at width
# 64 and context 12, 600 steps cost the time 400 steps took at width 128 and context 16, and
# the image tower gets the extra steps (docs/clip-recipe.md: what was measured).
TINY_CLIP_CONFIG: dict = {
    "model_cfg": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16},
        "text_cfg": {
            "context_length": 12,
            "vocab_size": 256 + 256 + TINY_BPE_MERGES + 2,  # bytes, bytes</w>, merges, SOT/EOT
            "width": 64,
            "heads": 4,
            "layers": 3,
            "tokenizer_kwargs": {"bpe_path": TINY_BPE_FILE},  # relative to the model folder
        },
    },
    "preprocess_cfg": {
        "size": 32,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "interpolation": "bilinear",
        "resize_mode": "shortest",
    },
}

# How the tiny CLIPs are trained: ClipTrainConfig's defaults are the course's recipe (one place
# to change it: mmlib/contrastive.py; docs/clip-recipe.md says why), as a dict that experiments
# and tests can patch. Each tiny CLIP then sets its own seed and split.
TINY_CLIP_TRAINING: dict = asdict(ClipTrainConfig())


@dataclass(frozen=True)
class TinyClipSpec:
    """How one tiny CLIP of the zoo is made."""

    seed: int
    split: str  # which shapes-world split it trains on
    purpose: str


TINY_MODELS: dict[str, TinyClipSpec] = {
    "tiny-clip": TinyClipSpec(seed=0, split="heldout", purpose="the course's CLIP"),
    "judge-clip": TinyClipSpec(
        seed=1, split="all", purpose="judges generated images (other seed, all pairs)"
    ),
    "tiny-clip-b": TinyClipSpec(
        seed=2, split="heldout", purpose="a second course CLIP: VQGAN+CLIP ensembles the two"
    ),
}


def new_tiny_clip(seed: int = 0) -> open_clip.CLIP:
    """Return a freshly initialised (untrained) CLIP of the tiny config, seeded."""
    torch.manual_seed(seed)
    model = open_clip.CLIP(**deepcopy(TINY_CLIP_CONFIG["model_cfg"]))
    model.visual.preprocess_cfg = dict(TINY_CLIP_CONFIG["preprocess_cfg"])
    return model


def tiny_bpe_path(home: str | os.PathLike | None = None) -> Path:
    """Return the tiny CLIPs' BPE file (the first TINY_BPE_MERGES merges of open_clip's own),
    written once into MMLIB_HOME/tokenizers; the same bytes on every machine."""
    path = cache_dir(home) / "tokenizers" / TINY_BPE_FILE
    if not path.is_file():
        lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as gz:  # no timestamp
            gz.write("\n".join(lines[: TINY_BPE_MERGES + 1]).encode("utf-8"))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
    return path


def tiny_tokenizer() -> open_clip.SimpleTokenizer:
    """Return the tokenizer of the tiny CLIPs: CLIP's BPE with TINY_BPE_MERGES merges, cut to
    their context length."""
    text_cfg = TINY_CLIP_CONFIG["model_cfg"]["text_cfg"]
    return open_clip.SimpleTokenizer(
        bpe_path=str(tiny_bpe_path()), context_length=text_cfg["context_length"]
    )


def tiny_train_config(name: str) -> ClipTrainConfig:
    """Return the ClipTrainConfig that makes the tiny model `name`."""
    spec = TINY_MODELS[name]
    return ClipTrainConfig(**{**TINY_CLIP_TRAINING, "seed": spec.seed, "split": spec.split})


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
    if name not in TINY_MODELS:
        raise ValueError(f"name={name!r} is not a tiny model; known: {list(TINY_MODELS)}")
    spec = TINY_MODELS[name]
    parts = {**asdict(spec), "training": recipe(tiny_train_config(name)), "trained": train}
    return cache_dir(home) / "models" / model_key(name, TINY_CLIP_CONFIG, **parts)


def _make_tiny_clip(folder: Path, name: str, train: bool, home) -> None:
    spec = TINY_MODELS[name]
    model = new_tiny_clip(spec.seed)
    dev = training_device()
    info = {"name": name, "trained": train, **asdict(spec), **_provenance(dev)}
    if train:
        config = tiny_train_config(name)
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
    vocab = {TINY_BPE_FILE: tiny_bpe_path().read_bytes()}
    return save_clip(folder, model, TINY_CLIP_CONFIG, info, vocab)


for _name, _spec in TINY_MODELS.items():  # load_clip("mmlib:tiny-clip") and friends
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
    return _make_once(folder, lambda: _make_tiny_vqgan(folder, VQGANTrainConfig(), home))


def _vqgan_folder(home=None) -> Path:
    key = model_key("tiny-vqgan", TINY_VQGAN, training=recipe(VQGANTrainConfig()))
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
        "config": TINY_VQGAN,
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
    model = VQGAN(**TINY_VQGAN)
    model.load_state_dict(load_weights(folder / weights))
    return model.to(get_device(device)).eval()


def judge_classifier_dir(home: str | os.PathLike | None = None) -> Path:
    """Return the folder of the supervised shape/colour classifier (trained on first use)."""
    config = judge.ClassifierTrainConfig()
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
    key = model_key("judge-classifier", recipe(judge.ClassifierTrainConfig()))
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


def generation_settings(profile: str | None = None) -> dict:
    """Return the GenerateConfig fields of a profile.

    tiny: 32 px, cutn 16, 150 steps, the other defaults (tuned on the 20 benchmark prompts,
    notebook 05; `mmlib bench generate` measures them: mmlib/data/spread/generate.json).
    full: 256 px, cutn 32, 300 steps, crops from half the picture up, no smoothness prior (the
    settings of the original VQGAN+CLIP notebooks; untuned here: no real weights on this machine).
    """
    if get_profile(profile) == "full":
        return {"size": 256, "cutn": 32, "steps": 300, "cut_min": 0.5, "smoothness": 0.0}
    return {"size": 32, "cutn": 16, "steps": generate.GenerateConfig.steps}


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

VQGAN_CLIP_BEST_OF = 2  # the benchmark keeps the better of 2 starts, chosen by the tiny CLIPs


def vqgan_clip_results_dir(home: str | os.PathLike | None = None) -> Path:
    """Return the folder of VQGAN+CLIP's benchmark: the 20 `judge.benchmark_pairs()` generated
    with the tiny profile (best of 2 starts by the generator's own CLIPs) and judged twice
    (made on first use; notebooks 05 and 06 read it)."""
    config = generate.GenerateConfig(**generation_settings("tiny"))
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
            best_of=VQGAN_CLIP_BEST_OF,
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
        asdict(generate.GenerateConfig(**generation_settings("tiny"))),
        pairs=judge.benchmark_pairs(),
        models=inputs,
        best_of=VQGAN_CLIP_BEST_OF,
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
    config, training = TransformerConfig(), dalle.DalleTrainConfig()
    tiny_vqgan_dir(home)
    folder = _dalle_folder(home)

    def make() -> None:
        dev = training_device()
        log.info("training the token transformer: %d steps, once, then cached", training.steps)
        vqgan = get_vqgan("tiny", device=dev)
        runs = cache_dir(home) / "runs" / folder.name  # checkpoints: an interrupted run resumes
        model, history = dalle.train_dalle(
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
        asdict(TransformerConfig()),
        training=recipe(dalle.DalleTrainConfig()),
        vqgan=_vqgan_folder(home).name,
        tokenizer=TINY_BPE_FILE,
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

UNCLIP_CLIP = "tiny-clip"  # the CLIP whose embeddings unCLIP's two models read and write


def unclip_prior_dir(home: str | os.PathLike | None = None) -> Path:
    """Return the folder of unCLIP's prior (text embedding -> image embedding of the course's
    CLIP), trained on first use on held-out-split scenes of `unclip.WORLD`."""
    tiny_clip_dir(UNCLIP_CLIP, home)
    folder = _unclip_folder("unclip-prior", home)
    training = unclip.PriorTrainConfig()

    def make() -> None:
        dev = training_device()
        log.info("training unCLIP's prior: %d steps, once, then cached", training.steps)
        clip = load_clip(f"mmlib:{UNCLIP_CLIP}", device=dev)
        runs = cache_dir(home) / "runs" / folder.name
        net, history = unclip.train_prior(clip, training, folder=runs, device=dev)
        _save_unclip(folder, "unclip-prior", net, history, training, dev)

    return _make_once(folder, make)


def unclip_decoder_dir(home: str | os.PathLike | None = None) -> Path:
    """Return the folder of unCLIP's decoder (CLIP image embedding -> tiny-VQGAN latents),
    trained on first use on held-out-split scenes of `unclip.WORLD`."""
    tiny_clip_dir(UNCLIP_CLIP, home), tiny_vqgan_dir(home)
    folder = _unclip_folder("unclip-decoder", home)
    training = unclip.DecoderTrainConfig()

    def make() -> None:
        dev = training_device()
        log.info("training unCLIP's decoder: %d steps, once, then cached", training.steps)
        clip = load_clip(f"mmlib:{UNCLIP_CLIP}", device=dev)
        runs = cache_dir(home) / "runs" / folder.name
        net, history = unclip.train_decoder(
            clip, get_vqgan("tiny", device=dev), training, folder=runs, device=dev
        )
        _save_unclip(folder, "unclip-decoder", net, history, training, dev)

    return _make_once(folder, make)


def _unclip_network(name: str) -> DenoiserConfig | UNetConfig:
    embed_dim = TINY_CLIP_CONFIG["model_cfg"]["embed_dim"]
    if name == "unclip-prior":
        return DenoiserConfig(dim=embed_dim)
    return UNetConfig(channels=TINY_VQGAN["embed_dim"], cond_dim=embed_dim)


def _unclip_folder(name: str, home=None) -> Path:
    training = unclip.PriorTrainConfig() if name == "unclip-prior" else unclip.DecoderTrainConfig()
    inputs = {"clip": _clip_folder(UNCLIP_CLIP, home).name}
    if name == "unclip-decoder":  # what it draws, from what it learns to predict
        inputs.update(vqgan=_vqgan_folder(home).name, predicts=unclip.DECODER_PREDICTS)
    key = model_key(
        name,
        asdict(_unclip_network(name)),
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
        "network": asdict(_unclip_network(name)),
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
    prior = _load_unclip(unclip_prior_dir(), unclip.VectorDenoiser(_unclip_network("unclip-prior")))
    decoder = _load_unclip(
        unclip_decoder_dir(), unclip.LatentDecoder(_unclip_network("unclip-decoder"))
    )
    clip = load_clip(f"mmlib:{UNCLIP_CLIP}", device=dev)
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
        **{name: _clip_folder(name, home) for name in TINY_MODELS},
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
