"""The profiles: which model each notebook gets, train-or-load for tiny models, and the registry
of the full profile's downloads.

- ``tiny`` (default): small open_clip ``CLIP`` configs made by the course, stored under
  ``MMLIB_HOME/models`` in open_clip's ``local-dir:`` format (``open_clip_config.json`` +
  ``open_clip_model.safetensors``), so they load through exactly the same path as any
  OpenCLIP model. Each folder also holds ``mmlib.json`` saying how it was made.
- ``full``: pretrained OpenCLIP ViT-B-32 (laion2b_s34b_b79k) and the official taming VQGAN,
  downloaded once (`mmlib zoo download full`), or placed by hand where `FULL_FILES` says.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import urllib.request
from copy import deepcopy
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from filelock import FileLock
from safetensors.torch import save_file

from mmlib import __version__
from mmlib.env import cache_dir, get_profile

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Tiny models
# ---------------------------------------------------------------------------------------------

# A small ModifiedResNet image tower (convolutions see small shapes better than 8x8 patches,
# at a fraction of a ViT's cost on a CPU) and a 3-layer text transformer.
TINY_CLIP_CONFIG: dict = {
    "model_cfg": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16},
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 128,
            "heads": 4,
            "layers": 3,
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


# How the tiny CLIPs are trained (fields of mmlib.contrastive.ClipTrainConfig).
TINY_CLIP_TRAINING: dict = {
    "steps": 400,
    "batch_size": 128,
    "lr": 2e-3,
    "warmup": 40,
    "eval_every": 100,
}


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


def model_key(name: str, config: dict, **parts) -> str:
    """Return a folder name for a model: its name plus a hash of config, parts and mmlib version."""
    blob = json.dumps({"config": config, "version": __version__, **parts}, sort_keys=True)
    return f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def tiny_train_config(name: str):
    """Return the ClipTrainConfig that makes the tiny model `name`."""
    from mmlib.contrastive import ClipTrainConfig

    spec = TINY_MODELS[name]
    return ClipTrainConfig(**{**TINY_CLIP_TRAINING, "seed": spec.seed, "split": spec.split})


def tiny_clip_dir(
    name: str = "tiny-clip", home: str | os.PathLike | None = None, train: bool = True
) -> Path:
    """Return the local-dir folder of a tiny CLIP, training and caching it on first use.

    The folder name is a hash of the model config, the training config, the seed, the split
    and mmlib's version: change any of them and a new model is trained. A file lock makes two
    notebooks (or `mmlib zoo prepare` runs) wait for one training instead of both training.
    With `train=False`, return an untrained model of the same config (for tests and demos).
    """
    if name not in TINY_MODELS:
        raise ValueError(f"name={name!r} is not a tiny model; known: {list(TINY_MODELS)}")
    spec = TINY_MODELS[name]
    parts = {**asdict(spec), "training": asdict(tiny_train_config(name)), "trained": train}
    folder = cache_dir(home) / "models" / model_key(name, TINY_CLIP_CONFIG, **parts)
    _make_once(folder, lambda: _make_tiny_clip(folder, name, train, home))
    if not train:
        log.warning("%s is UNTRAINED (random weights): its answers mean nothing.", name)
    return folder


def _make_once(folder: Path, make) -> None:
    """Run `make()` unless `folder` is complete; a file lock lets one process do it at a time."""
    if not (folder / "mmlib.json").is_file():
        with FileLock(str(folder) + ".lock"):
            if not (folder / "mmlib.json").is_file():  # another process may have made it
                make()


def new_tiny_clip(seed: int = 0):
    """Return a freshly initialised (untrained) CLIP of the tiny config, seeded."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(**deepcopy(TINY_CLIP_CONFIG["model_cfg"]))
    model.visual.preprocess_cfg = dict(TINY_CLIP_CONFIG["preprocess_cfg"])
    return model


def tiny_tokenizer():
    """Return the tokenizer of the tiny CLIPs: CLIP's BPE, cut to their context length."""
    import open_clip

    return open_clip.SimpleTokenizer(
        context_length=TINY_CLIP_CONFIG["model_cfg"]["text_cfg"]["context_length"]
    )


def _make_tiny_clip(folder: Path, name: str, train: bool, home) -> None:
    from mmlib.contrastive import train_clip
    from mmlib.zeroshot import evaluate_shapes

    spec = TINY_MODELS[name]
    model = new_tiny_clip(spec.seed)
    info = {"name": name, "trained": train, "mmlib_version": __version__, **asdict(spec)}
    if train:
        config = tiny_train_config(name)
        tokenizer = tiny_tokenizer()
        log.info(
            "training %s (%s): %d steps, done once and cached", name, spec.purpose, config.steps
        )
        runs = cache_dir(home) / "runs" / folder.name  # checkpoints: an interrupted run resumes
        history = train_clip(model, tokenizer, config, folder=runs, device="cpu")
        final = evaluate_shapes(model, None, tokenizer, per_pair=20, seed=4321, device="cpu")
        info.update(
            steps=config.steps,
            train_seconds=history.last("seconds"),
            zeroshot_seen=final["seen"],
            zeroshot_heldout=final["heldout"],
            history=history.records,
        )
    save_local_dir(folder, model, TINY_CLIP_CONFIG, info)


def tiny_vqgan_dir(home: str | os.PathLike | None = None) -> Path:
    """Return the folder of the tiny VQGAN (config + safetensors), training it on first use."""
    from mmlib import vqgan

    config = vqgan.VQGANTrainConfig()
    folder = (
        cache_dir(home)
        / "models"
        / model_key("tiny-vqgan", vqgan.TINY_VQGAN, training=asdict(config))
    )
    _make_once(folder, lambda: _make_tiny_vqgan(folder, config, home))
    return folder


def _make_tiny_vqgan(folder: Path, config, home) -> None:
    from mmlib import vqgan

    torch.manual_seed(config.seed)
    model = vqgan.VQGAN(**vqgan.TINY_VQGAN)
    log.info("training the tiny VQGAN: %d steps, done once and cached", config.steps)
    runs = cache_dir(home) / "runs" / folder.name
    before = {}  # the model just before the discriminator joins, for notebook 04
    history = vqgan.train_vqgan(
        model, config, folder=runs, on_disc_start=lambda m: before.update(_weights(m))
    )
    final = vqgan.evaluate_vqgan(model, n=512)
    info = {
        "name": "tiny-vqgan",
        "trained": True,
        "mmlib_version": __version__,
        "steps": config.steps,
        "train_seconds": history.last("seconds"),
        "psnr": final["psnr"],
        "codebook_used": final["codebook_used"],
        "perplexity": final["perplexity"],
        "history": history.records,
        "config": vqgan.TINY_VQGAN,
    }
    save_model_dir(folder, model, info, extra={"before_gan.safetensors": before} if before else {})


def get_vqgan(profile: str | None = None, device=None, weights: str = "model.safetensors"):
    """Return the profile's VQGAN in eval mode: the tiny one, or the official f16 16384 one.

    For the tiny one, `weights="before_gan.safetensors"` gives it as it was just before the
    patch discriminator joined the training.
    """
    from mmlib import vqgan

    if get_profile(profile) == "full":
        ckpt, config = (find_full_file(item) for item in FULL_FILES[1:3])
        if ckpt is None or config is None:
            from mmlib.clip import WeightsNotFoundError

            raise WeightsNotFoundError(
                "the full profile's VQGAN is not on this machine.\n" + download_instructions()
            )
        return vqgan.load_vqgan(config, ckpt, device=device)
    from safetensors.torch import load_file

    folder = tiny_vqgan_dir()
    model = vqgan.VQGAN(**vqgan.TINY_VQGAN)
    if not (folder / weights).is_file():
        raise FileNotFoundError(
            f"the tiny VQGAN has no {weights!r}; found {sorted(p.name for p in folder.iterdir())}"
        )
    model.load_state_dict(load_file(str(folder / weights)))
    from mmlib.env import get_device

    return model.to(get_device(device)).eval()


def judge_classifier_dir(home: str | os.PathLike | None = None) -> Path:
    """Return the folder of the supervised shape/colour classifier (trained on first use)."""
    from mmlib import judge

    config = judge.ClassifierTrainConfig()
    folder = cache_dir(home) / "models" / model_key("judge-classifier", judge.config_dict(config))

    def make() -> None:
        log.info("training the judge classifier: %d steps, done once and cached", config.steps)
        model, history = judge.train_classifier(config)
        info = {
            "name": "judge-classifier",
            "mmlib_version": __version__,
            "accuracy": judge.classifier_accuracy(model),
            "history": history.records,
            "train_seconds": history.last("seconds"),
        }
        save_model_dir(folder, model, info)

    _make_once(folder, make)
    return folder


def get_judge_classifier():
    """Return the shape/colour classifier that judges generated pictures, in eval mode."""
    from safetensors.torch import load_file

    from mmlib.judge import ShapeColourNet

    model = ShapeColourNet()
    model.load_state_dict(load_file(str(judge_classifier_dir() / "model.safetensors")))
    return model.eval()


def get_judges():
    """Return the two judges: (judge CLIP as (model, preprocess, tokenizer), classifier)."""
    from mmlib.clip import load_clip

    return load_clip("mmlib:judge-clip"), get_judge_classifier()


def tiny_vqgan_info() -> dict:
    """Return how the tiny VQGAN was made: history, PSNR and codebook use."""
    return json.loads((tiny_vqgan_dir() / "mmlib.json").read_text())


def tiny_clip_info(name: str = "tiny-clip") -> dict:
    """Return how a tiny CLIP was made: its training history and final zero-shot accuracy."""
    return json.loads((tiny_clip_dir(name) / "mmlib.json").read_text())


def _write_atomically(folder: Path, write) -> Path:
    """Call write(tmp) on a fresh temporary folder, then rename it to `folder`: the folder
    appears complete or not at all."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def _weights(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}


def save_local_dir(folder: Path, model: torch.nn.Module, config: dict, info: dict) -> Path:
    """Write `model` as an open_clip local-dir folder (config + safetensors + mmlib.json)."""

    def write(tmp: Path) -> None:
        (tmp / "open_clip_config.json").write_text(json.dumps(config, indent=2))
        save_file(_weights(model), str(tmp / "open_clip_model.safetensors"))
        (tmp / "mmlib.json").write_text(json.dumps(info, indent=2))

    return _write_atomically(folder, write)


def save_model_dir(
    folder: Path, model: torch.nn.Module, info: dict, extra: dict | None = None
) -> Path:
    """Write weights (model.safetensors), mmlib.json and `extra` {file name: state dict} into
    `folder` atomically."""

    def write(tmp: Path) -> None:
        save_file(_weights(model), str(tmp / "model.safetensors"))
        for name, state in (extra or {}).items():
            save_file(state, str(tmp / name))
        (tmp / "mmlib.json").write_text(json.dumps(info, indent=2))

    return _write_atomically(folder, write)


# ---------------------------------------------------------------------------------------------
# The full profile's files
# ---------------------------------------------------------------------------------------------

FULL_CLIP = ("ViT-B-32", "laion2b_s34b_b79k")
FULL_VQGAN = "vqgan_imagenet_f16_16384"


@dataclass(frozen=True)
class FullFile:
    """One file the full profile needs: where it comes from and where mmlib looks for it."""

    name: str
    folder: str  # under MMLIB_HOME/full
    filename: str
    url: str
    size_mb: int | None  # approximate
    sha256: str | None  # None where no published checksum is known
    licence: str
    hf_repo: str | None = None  # also found in the Hugging Face hub cache
    optional: bool = False  # not used by the course; fetched by `mmlib zoo download full --all`

    def local_path(self, home: str | os.PathLike | None = None) -> Path:
        return cache_dir(home) / "full" / self.folder / self.filename


FULL_FILES: tuple[FullFile, ...] = (
    FullFile(
        name="OpenCLIP ViT-B-32 laion2b_s34b_b79k",
        folder="ViT-B-32-laion2b_s34b_b79k",
        filename="open_clip_model.safetensors",
        url="https://huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/main/open_clip_model.safetensors",
        size_mb=605,
        sha256=None,
        licence="MIT (weights released by LAION under MIT)",
        hf_repo="laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    ),
    FullFile(
        name="taming VQGAN imagenet f16 16384 (checkpoint)",
        folder=FULL_VQGAN,
        filename="last.ckpt",
        url="https://heibox.uni-heidelberg.de/d/a7530b09fed84f80a887/files/?p=%2Fckpts%2Flast.ckpt&dl=1",
        size_mb=980,
        sha256=None,
        licence="MIT (taming-transformers, CompVis)",
    ),
    FullFile(
        name="taming VQGAN imagenet f16 16384 (config)",
        folder=FULL_VQGAN,
        filename="model.yaml",
        url="https://heibox.uni-heidelberg.de/d/a7530b09fed84f80a887/files/?p=%2Fconfigs%2Fmodel.yaml&dl=1",
        size_mb=None,
        sha256=None,
        licence="MIT (taming-transformers, CompVis)",
    ),
    *(
        FullFile(
            name=f"taming {name} ({what})",
            folder=name,
            filename=filename,
            url=f"https://heibox.uni-heidelberg.de/d/{share}/files/?p=%2F{sub}%2F{filename}&dl=1",
            size_mb=size if what == "checkpoint" else None,
            sha256=None,
            licence="MIT (taming-transformers, CompVis)",
            optional=True,
        )
        for name, share, size in (
            ("vqgan_imagenet_f16_1024", "8088892a516d4e3baf92", 958),
            ("vqgan_gumbel_f8_8192", "2e5662443a6b4307b470", 376),
        )
        for what, sub, filename in (
            ("checkpoint", "ckpts", "last.ckpt"),
            ("config", "configs", "model.yaml"),
        )
    ),
)


def find_full_file(item: FullFile, home: str | os.PathLike | None = None) -> Path | None:
    """Return where `item` is on this machine (MMLIB_HOME/full or the hub cache), or None."""
    local = item.local_path(home)
    if local.is_file() and local.stat().st_size > 0:
        return local
    for alt in (".bin",) if local.suffix == ".safetensors" else ():
        other = local.with_name("open_clip_pytorch_model" + alt)
        if other.is_file():
            return other
    if item.hf_repo:
        from mmlib.clip import HF_WEIGHT_FILES, find_in_hf_cache

        return find_in_hf_cache(item.hf_repo, HF_WEIGHT_FILES)
    return None


def full_weights_path(model_name: str, tag: str) -> Path | None:
    """Return the full profile's CLIP weights for (model_name, tag) if mmlib has them locally."""
    if (model_name, tag) != FULL_CLIP:
        return None
    local = FULL_FILES[0].local_path()
    for candidate in (local, local.with_name("open_clip_pytorch_model.bin")):
        if candidate.is_file():
            return candidate
    return None


def full_profile_status(home: str | os.PathLike | None = None) -> list[dict]:
    """Return, for each file of the full profile, its name, where it goes and whether it is here."""
    return [
        {
            "name": item.name,
            "present": find_full_file(item, home) is not None,
            "path": str(item.local_path(home)),
            "url": item.url,
            "size_mb": item.size_mb,
            "optional": item.optional,
        }
        for item in FULL_FILES
    ]


def download_instructions(home: str | os.PathLike | None = None) -> str:
    """Return exactly what to fetch for the full profile and where to put each file."""
    lines = ["The full profile needs these files (fetch them where there is a network):"]
    for item in sorted(FULL_FILES, key=lambda f: f.optional):
        if item.optional and "optional" not in lines[-1] and "Optional" not in "".join(lines):
            lines.append(
                "Optional (other official VQGANs that load_vqgan reads; not used by the course):"
            )
        size = f"~{item.size_mb} MB" if item.size_mb else "small"
        lines.append(f"  - {item.name} ({size}, licence: {item.licence})")
        lines.append(f"      from: {item.url}")
        lines.append(f"      put at: {item.local_path(home)}")
    lines.append("Or copy a whole MMLIB_HOME from a machine where `mmlib zoo download full` ran.")
    return "\n".join(lines)


def _download(url: str, target: Path) -> None:
    from tqdm.auto import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    with urllib.request.urlopen(url, timeout=30) as resp, open(part, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
    with open(part, "rb") as fh:
        if fh.read(64).lstrip().lower().startswith((b"<!doctype html", b"<html")):
            part.unlink()
            raise OSError(f"{url} returned an HTML page instead of the file (a dead link?)")
    os.replace(part, target)


def download_full(home: str | os.PathLike | None = None, include_optional: bool = False) -> bool:
    """Fetch the full profile's files that are missing; return True when all are present.

    Offline, fetch nothing and print exactly what to fetch and where to put it.
    """
    from mmlib.clip import is_offline

    wanted = [item for item in FULL_FILES if include_optional or not item.optional]
    missing = [item for item in wanted if find_full_file(item, home) is None]
    if not missing:
        print("All files of the full profile are present.")
        return True
    if is_offline():
        print("No network here (or HF_HUB_OFFLINE=1): nothing downloaded.\n")
        print(download_instructions(home))
        return False
    ok = True
    for item in missing:
        try:
            _download(item.url, item.local_path(home))
        except OSError as err:
            ok = False
            print(f"Could not download {item.name}: {err}\n  put it at {item.local_path(home)}")
    return ok


# ---------------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------------


def get_clip(profile: str | None = None, device=None):
    """Return (model, preprocess, tokenizer) of the profile's CLIP: the tiny one or ViT-B-32."""
    from mmlib.clip import load_clip

    if get_profile(profile) == "full":
        return load_clip(FULL_CLIP[0], pretrained=FULL_CLIP[1], device=device)
    return load_clip("mmlib:tiny-clip", device=device)


def get_generation_clips(profile: str | None = None, device=None) -> list:
    """Return the CLIPs VQGAN+CLIP steers with: ViT-B-32 (full), or the two course CLIPs (tiny).

    Two tiny CLIPs (seeds 0 and 2, same data) ensembled as pixray does: a picture has to please
    both, so it can no longer pass on one model's quirks (notebook 05 measures the difference).
    """
    from mmlib.clip import load_clip

    if get_profile(profile) == "full":
        return [get_clip("full", device=device)]
    return [get_clip("tiny", device=device), load_clip("mmlib:tiny-clip-b", device=device)]


VQGAN_CLIP_BEST_OF = 2  # the benchmark keeps the better of 2 starts, chosen by the tiny CLIPs


def vqgan_clip_results_dir(home: str | os.PathLike | None = None) -> Path:
    """Return the folder of VQGAN+CLIP's benchmark: the 20 `judge.benchmark_pairs()` generated
    with the tiny profile (best of 2 starts by the generator's own CLIPs) and judged twice
    (made on first use; notebooks 05 and 06 read it)."""
    from mmlib import generate, judge

    config = generate.GenerateConfig(**generate.profile_settings("tiny"))
    pairs = judge.benchmark_pairs()
    inputs = [
        tiny_clip_dir("tiny-clip", home).name,
        tiny_clip_dir("tiny-clip-b", home).name,
        tiny_vqgan_dir(home).name,
        tiny_clip_dir("judge-clip", home).name,
        judge_classifier_dir(home).name,
    ]
    folder = (
        cache_dir(home)
        / "models"
        / model_key(
            "vqgan-clip-results",
            asdict(config),
            pairs=pairs,
            models=inputs,
            best_of=VQGAN_CLIP_BEST_OF,
        )
    )

    def make() -> None:
        log.info(
            "generating the VQGAN+CLIP benchmark (%d prompts), done once and cached", len(pairs)
        )
        results = generate.run_benchmark(
            get_vqgan("tiny", device="cpu"),
            get_generation_clips("tiny", device="cpu"),
            get_judges(),
            pairs,
            config,
            best_of=VQGAN_CLIP_BEST_OF,
        )
        images = results.pop("images")

        def write(tmp: Path) -> None:
            save_file({"images": images.contiguous()}, str(tmp / "images.safetensors"))
            info = {"name": "vqgan-clip-results", "mmlib_version": __version__, **results}
            (tmp / "mmlib.json").write_text(json.dumps(info, indent=1))

        _write_atomically(folder, write)

    _make_once(folder, make)
    return folder


def vqgan_clip_results(home: str | os.PathLike | None = None) -> dict:
    """Return VQGAN+CLIP's cached benchmark: pairs, prompts, images, each judge's verdicts."""
    from safetensors.torch import load_file

    folder = vqgan_clip_results_dir(home)
    results = json.loads((folder / "mmlib.json").read_text())
    results["images"] = load_file(str(folder / "images.safetensors"))["images"]
    results["pairs"] = [tuple(p) for p in results["pairs"]]
    for name in ("judge_clip", "classifier"):
        results[name]["predictions"] = [tuple(p) for p in results[name]["predictions"]]
    return results


def dalle_dir(home: str | os.PathLike | None = None) -> Path:
    """Return the folder of the course's DALL-E-style token transformer (trained on first use
    on the tiny VQGAN's tokens of held-out-split scenes in the world DalleTrainConfig picks,
    then measured with both judges)."""
    from mmlib import dalle

    config, training = dalle.DalleConfig(), dalle.DalleTrainConfig()
    vqgan_name = tiny_vqgan_dir(home).name
    folder = (
        cache_dir(home)
        / "models"
        / model_key(
            "tiny-dalle",
            asdict(config),
            training=asdict(training),
            vqgan=vqgan_name,
            sampling=dalle.SAMPLING,
            draws=dalle.BENCHMARK_DRAWS,
        )
    )

    def make() -> None:
        log.info("training the token transformer: %d steps, done once and cached", training.steps)
        vqgan = get_vqgan("tiny", device="cpu")
        runs = cache_dir(home) / "runs" / folder.name  # checkpoints: an interrupted run resumes
        model, history = dalle.train_dalle(config, training, vqgan, tiny_tokenizer(), folder=runs)
        clips = get_generation_clips("tiny", device="cpu")  # the course's two CLIPs re-rank
        evaluation = dalle.evaluate_dalle(
            model, vqgan, clips, get_judges(), draws=dalle.BENCHMARK_DRAWS, **dalle.SAMPLING
        )
        evaluation.pop("images"), evaluation.pop("best")  # pictures: not for the JSON
        info = {
            "name": "tiny-dalle",
            "mmlib_version": __version__,
            "history": history.records,
            "train_seconds": history.last("seconds"),
            "sampling": dalle.SAMPLING,
            "training": asdict(training),
            "evaluation": evaluation,
        }
        dalle.save_dalle(folder, model, info)

    _make_once(folder, make)
    return folder


def get_dalle(device=None):
    """Return the course's trained token transformer (mmlib.dalle.TokenTransformer), in eval mode."""
    from mmlib import dalle

    return dalle.load_dalle(dalle_dir(), device=device, tokenizer=tiny_tokenizer())


def tiny_dalle_info() -> dict:
    """Return how the token transformer was made: history, seconds, the judges' verdicts."""
    return json.loads((dalle_dir() / "mmlib.json").read_text())


def example_images(profile: str | None = None, n: int = 4):
    """Return (images, captions): shapes-world scenes for tiny, scikit-image photos for full."""
    if get_profile(profile) == "full":
        from mmlib.images import SAMPLE_PHOTOS, sample_photos

        photos = sample_photos(list(SAMPLE_PHOTOS)[:n])
        return list(photos.values()), [SAMPLE_PHOTOS[name] for name in photos]
    from mmlib import toyworld

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


def prepare(profile: str | None = None) -> list[str]:
    """Make sure every model of the profile is ready (train or load tiny ones); return their names."""
    if get_profile(profile) == "full":
        if not download_full():
            raise SystemExit(1)
        return [item.name for item in FULL_FILES]
    names = []
    for name in TINY_MODELS:
        print(f"{name}: {tiny_clip_dir(name)}")
        names.append(name)
    print(f"tiny-vqgan: {tiny_vqgan_dir()}")
    print(f"judge-classifier: {judge_classifier_dir()}")
    print(f"vqgan-clip-results: {vqgan_clip_results_dir()}")
    print(f"tiny-dalle: {dalle_dir()}")
    return [*names, "tiny-vqgan", "judge-classifier", "vqgan-clip-results", "tiny-dalle"]
