"""The profiles: which model each notebook gets.

- ``tiny`` (default): the course's own small models, made on the shapes world once and cached
  (`mmlib.tiny_models`: three tiny CLIPs, a tiny VQGAN, the judges' classifier;
  `mmlib.tiny_generators`: VQGAN+CLIP's benchmark, a token transformer, unCLIP).
- ``full``: pretrained OpenCLIP ViT-B-32 and the official taming VQGAN (`mmlib.store.downloads`).
"""

from __future__ import annotations

import os
from pathlib import Path

from mmlib import recipes, tiny_generators, tiny_models, toyworld
from mmlib.images import SAMPLE_PHOTOS, sample_photos
from mmlib.store.checkpoints import model_dir_complete
from mmlib.store.clip_loading import load_clip
from mmlib.store.downloads import FULL_CLIP, FULL_FILES, download_instructions, find_full_file
from mmlib.store.weights import WeightsNotFoundError
from mmlib.vqgan import load_vqgan

PROFILES = ("tiny", "full")


def get_profile(profile: str | None = None) -> str:
    """Return the profile to use: `profile` if given, else `MMLIB_PROFILE`, else 'tiny'."""
    chosen = profile if profile is not None else os.environ.get("MMLIB_PROFILE", "tiny")
    chosen = str(chosen).strip().lower()
    if chosen not in PROFILES:
        raise ValueError(f"profile={chosen!r} is not known; choose one of {list(PROFILES)}")
    return chosen


def get_clip(profile: str | None = None, device=None):
    """Return (model, preprocess, tokenizer) of the profile's CLIP: the tiny one or ViT-B-32."""
    if get_profile(profile) == "full":
        return load_clip(FULL_CLIP[0], pretrained=FULL_CLIP[1], device=device)
    return load_clip("mmlib:tiny-clip", device=device)


def get_generation_clips(profile: str | None = None, device=None) -> list:
    """Return the CLIPs VQGAN+CLIP steers with: ViT-B-32 (full), or the two course CLIPs (tiny:
    `tiny_models.generation_clips` says why two)."""
    if get_profile(profile) == "full":
        return [get_clip("full", device=device)]
    return tiny_models.generation_clips(device)


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
    return tiny_models.load_tiny_vqgan(device, weights)


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
# Preparing a profile
# ---------------------------------------------------------------------------------------------


def tiny_folders(home: str | os.PathLike | None = None) -> dict[str, Path]:
    """Return {name: folder} of everything the tiny profile caches (nothing is made: the
    folders may not exist yet; `PREPARE_STEPS` says in which order `prepare` makes them)."""
    return {
        **{name: tiny_models.clip_folder(name, home) for name in recipes.TINY_MODELS},
        "tiny-vqgan": tiny_models.vqgan_folder(home),
        "judge-classifier": tiny_models.classifier_folder(home),
        "vqgan-clip-results": tiny_generators.vqgan_clip_folder(home),
        "tiny-dalle": tiny_generators.dalle_folder(home),
        "unclip-decoder": tiny_generators.unclip_folder("unclip-decoder", home),
        "unclip-prior": tiny_generators.unclip_folder("unclip-prior", home),
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
