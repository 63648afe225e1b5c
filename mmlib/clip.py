"""CLIP models: load one by name (tags, files, local-dir:, hf-hub:, registered mmlib: names),
save one as a local-dir folder, encode images and texts in batches, compare and score them.

Every way of naming a model ends in one open_clip call, so tiny and full models behave alike.
Weights are found on disk (`mmlib.store.weights`) *before* open_clip is asked for them: a missing
file without a network is one clear error at once. ``mmlib:`` names resolve through a small
registry that the course layer fills (`register_model`), as open_clip's `add_model_config`
extends its model list.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF
from tqdm.auto import tqdm

from mmlib.env import MMLibError, autocast, get_device, module_device, to_device
from mmlib.images import load_image
from mmlib.store.checkpoints import save_model_dir, state_dict_cpu
from mmlib.store.weights import (
    HF_WEIGHT_FILES,
    WeightsNotFoundError,
    check_checkpoint_file,
    find_local_weights,
    local_weights_dir,
    resolve_hf_file,
)

log = logging.getLogger(__name__)

MMLIB_SCHEMA = "mmlib:"
CONFIG_FILE = "open_clip_config.json"


@dataclass
class LoadedClip:
    """What `load_clip` returns; unpacks as `model, preprocess, tokenizer`."""

    model: torch.nn.Module
    preprocess: Any
    tokenizer: Any
    name: str
    weights: str | None

    def __iter__(self):
        return iter((self.model, self.preprocess, self.tokenizer))


# ---------------------------------------------------------------------------------------------
# The registry of `mmlib:` names
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registered:
    """A model loadable as ``mmlib:<name>``: `folder()` returns its open_clip local-dir folder."""

    folder: Callable[[], Path]
    source: str  # who registered it (for error messages)
    description: str = ""


_REGISTRY: dict[str, Registered] = {}


def register_model(
    name: str, folder: Callable[[], Path], source: str, description: str = ""
) -> None:
    """Make ``load_clip("mmlib:<name>")`` load the local-dir folder that `folder()` returns (it
    may make the folder on first use). As open_clip's `add_model_config` extends its model list,
    the course layer (`mmlib.zoo`) registers its tiny models here; `source` names who did."""
    if not isinstance(name, str) or not name.strip() or name.startswith(MMLIB_SCHEMA):
        raise ValueError(f"name must be a bare model name such as 'tiny-clip', got {name!r}")
    if not callable(folder):
        raise ValueError(f"folder must be a function returning the model's folder, got {folder!r}")
    _REGISTRY[name.strip()] = Registered(folder, source, description)


def registered_models() -> dict[str, str]:
    """Return {"mmlib:<name>": "description (registered by <source>)"} of every registered model."""
    return {
        MMLIB_SCHEMA + n: f"{r.description} (registered by {r.source})".strip()
        for n, r in _REGISTRY.items()
    }


def _not_registered(name: str) -> ValueError:
    known = registered_models()
    close = difflib.get_close_matches(MMLIB_SCHEMA + name, list(known), n=3, cutoff=0.5)
    hint = f" Did you mean {close}?" if close else ""
    where = f"Registered now: {sorted(known)}." if known else "No mmlib: model is registered yet."
    return ValueError(
        f"name={MMLIB_SCHEMA + name!r} is not a registered mmlib model.{hint} {where} The "
        f"course's tiny models are registered by its course layer: `import mmlib.zoo` (or load "
        f"them with `mmlib.zoo.get_clip()`); your own with mmlib.clip.register_model()."
    )


def _unknown_model(name: str) -> ValueError:
    names = list(registered_models()) + open_clip.list_models()
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" Did you mean {close}?" if close else ""
    return ValueError(
        f"name={name!r} is not a CLIP model mmlib knows.{hint} Use an open_clip model name "
        f"(open_clip.list_models(), e.g. 'ViT-B-32') with pretrained=<tag or file>, "
        f"'local-dir:/path', 'hf-hub:org/repo', or a registered mmlib model "
        f"{sorted(registered_models()) or '(none registered: import mmlib.zoo)'}."
    )


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_clip(
    name: str,
    pretrained: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | None = None,
    weights_only: bool = True,
) -> LoadedClip:
    """Return (model, preprocess, tokenizer) for a CLIP model, in eval mode on `device`.

    `name` is one of:
      - an open_clip model name (``"ViT-B-32"``) with `pretrained` a tag
        (``"laion2b_s34b_b79k"``), a checkpoint file, or None for random weights;
      - ``"local-dir:/path"``: a folder with ``open_clip_config.json`` and weights;
      - ``"hf-hub:org/repo"``: a Hugging Face repo in open_clip's format;
      - ``"mmlib:tiny-clip"`` (or ``"tiny-clip"``): a registered model (`register_model`; the
        course's tiny models are registered by `mmlib.zoo`).
    `cache_dir` is the Hugging Face hub cache to read and download into (its default if None).
    Foreign checkpoint files are read with ``weights_only=True`` unless you pass False for a
    file you trust.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty model name string, got {name!r}")
    name = name.strip()
    dev = get_device(device)

    bare = name[len(MMLIB_SCHEMA) :] if name.startswith(MMLIB_SCHEMA) else name
    if bare in _REGISTRY:
        entry = _REGISTRY[bare]
        hint = f"Delete the folder and it is made again ({entry.source})."
        return _load_local_dir(Path(entry.folder()), dev, name, hint)
    if name.startswith(MMLIB_SCHEMA):
        raise _not_registered(bare)
    if name.startswith("local-dir:"):
        return _load_local_dir(Path(name[len("local-dir:") :]).expanduser(), dev, name)

    if name.startswith("hf-hub:"):
        repo_id = name[len("hf-hub:") :]
        config = resolve_hf_file(repo_id, ("open_clip_config.json",), cache_dir, what=name)
        weights = resolve_hf_file(repo_id, HF_WEIGHT_FILES, cache_dir, what=name)
        if weights.parent != config.parent:  # both live in one snapshot folder of the cache
            raise MMLibError(f"{name}: config and weights come from different snapshots")
        return _create(
            "local-dir:" + str(config.parent), None, dev, name=name, weights=str(weights)
        )

    model_name = name.replace("/", "-")
    if model_name not in open_clip.list_models():
        raise _unknown_model(name)
    if pretrained is None:
        log.warning("load_clip(%r): no pretrained weights asked for; the model is random", name)
        return _create(model_name, None, dev, name=name, weights=None)

    pretrained = os.fspath(pretrained)
    tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if tag_cfg:
        weights = _resolve_tag(model_name, pretrained, tag_cfg, cache_dir)
        preprocess_kw = {
            k: tag_cfg[k]
            for k in ("mean", "std", "interpolation", "resize_mode")
            if tag_cfg.get(k) is not None
        }
        return _create(
            model_name,
            weights,
            dev,
            name=name,
            weights=str(weights),
            weights_only=weights_only,
            quick_gelu=tag_cfg.get("quick_gelu", False),
            **{f"image_{k}": v for k, v in preprocess_kw.items()},
        )
    path = Path(pretrained).expanduser()
    if path.is_file():
        check_checkpoint_file(path, weights_only)
        return _create(
            model_name, path, dev, name=name, weights=str(path), weights_only=weights_only
        )
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    raise FileNotFoundError(
        f"pretrained={pretrained!r} for {name!r} is neither a known tag nor an existing file. "
        f"Known tags for {model_name}: {tags}"
    )


def _load_local_dir(folder: Path, dev, name: str, hint: str = "") -> LoadedClip:
    """Load an open_clip local-dir folder after checking that its config and weights are there
    and readable: a folder without weights must never give a randomly initialised model."""
    if not folder.is_dir():
        raise FileNotFoundError(
            f"name={name!r}: no folder at {str(folder)!r}. A local-dir: folder holds "
            f"{CONFIG_FILE} and the weights ({' or '.join(HF_WEIGHT_FILES)})."
        )
    found = sorted(p.name for p in folder.iterdir())
    if not (folder / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"name={name!r}: {str(folder)!r} has no {CONFIG_FILE}; found {found[:10]}. {hint}"
        )
    weights = next((folder / f for f in HF_WEIGHT_FILES if (folder / f).exists()), None)
    if weights is None:
        raise FileNotFoundError(
            f"name={name!r}: {str(folder)!r} has no weights ({' or '.join(HF_WEIGHT_FILES)}); "
            f"found {found[:10]}. Without them the model would be random. {hint}".rstrip()
        )
    check_checkpoint_file(weights, hint=hint or "Put a complete weights file there.")
    config = json.loads((folder / CONFIG_FILE).read_text())
    tokenizer_kw = dict(config.get("model_cfg", {}).get("text_cfg", {}).get("tokenizer_kwargs", {}))
    if "bpe_path" in tokenizer_kw:  # a vocabulary file stored beside the weights
        tokenizer_kw["bpe_path"] = str(folder / tokenizer_kw["bpe_path"])
    return _create(
        "local-dir:" + str(folder), None, dev, name=name, weights=str(weights), **tokenizer_kw
    )


def _resolve_tag(model_name: str, tag: str, tag_cfg: dict, cache_dir) -> Path:
    local = find_local_weights(model_name, tag)
    if local is not None:
        return local
    hub = tag_cfg.get("hf_hub", "")
    if not hub:
        raise WeightsNotFoundError(
            f"{model_name}/{tag} is not hosted on the Hugging Face hub; download it from "
            f"{tag_cfg.get('url', 'its source')} and pass pretrained='/path/to/file'."
        )
    repo_id, filename = hub.rstrip("/").rsplit("/", 1) if not hub.endswith("/") else (hub[:-1], "")
    filenames = (filename,) if filename else HF_WEIGHT_FILES
    try:
        return resolve_hf_file(repo_id, filenames, cache_dir, what=f"{model_name} / {tag}")
    except WeightsNotFoundError as err:
        where = local_weights_dir(model_name, tag) / HF_WEIGHT_FILES[0]
        raise WeightsNotFoundError(
            f"{err}\n  Or simply put the file at {where} (mmlib looks there first)."
        ) from None


def _create(
    model_name,
    checkpoint,
    dev,
    *,
    name,
    weights,
    weights_only=True,
    quick_gelu=False,
    bpe_path=None,
    **preprocess_kw,
) -> LoadedClip:
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name,
            pretrained=str(checkpoint) if checkpoint is not None else None,
            device=dev,
            weights_only=weights_only,
            force_quick_gelu=quick_gelu,
            **preprocess_kw,
        )
    except (RuntimeError, AssertionError, KeyError) as err:
        if checkpoint is None:
            raise
        first = " ".join(line.strip() for line in str(err).splitlines()[:4]) or type(err).__name__
        raise ValueError(
            f"the weights in {weights!r} do not fit the model {model_name!r} "
            f"(a checkpoint of another config?): {first}"
        ) from err
    model.eval()
    tokenizer_kw = {"bpe_path": bpe_path} if bpe_path else {}
    tokenizer = open_clip.get_tokenizer(model_name, **tokenizer_kw)
    return LoadedClip(model, preprocess, tokenizer, name, weights)


def save_clip(
    folder: str | os.PathLike,
    model: torch.nn.Module,
    config: dict,
    info: dict,
    files: dict[str, bytes] | None = None,
) -> Path:
    """Write `model` as an open_clip local-dir folder, atomically: open_clip_config.json (`config`:
    model_cfg and preprocess_cfg), open_clip_model.safetensors, mmlib.json (`info`) and `files`
    (e.g. the BPE vocabulary that the config's tokenizer_kwargs name, relative to the folder)."""
    return save_model_dir(
        folder,
        {HF_WEIGHT_FILES[0]: state_dict_cpu(model)},
        info,
        files={CONFIG_FILE: json.dumps(config, indent=2), **(files or {})},
    )


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


def input_size(model: torch.nn.Module) -> tuple[int, int]:
    """Return the (height, width) of the images the model's image encoder takes."""
    size = model.visual.image_size
    return (size, size) if isinstance(size, int) else tuple(size)


@dataclass(frozen=True)
class TensorTransform:
    """Map an image tensor (C,H,W or N,C,H,W; float in [0, 1] or uint8) to model input: resize
    and centre-crop to `size`, then normalise. A class, not a closure, so that DataLoader worker
    processes started with `spawn` (macOS, Windows) can receive it."""

    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    bilinear: bool = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        if tuple(x.shape[-2:]) != self.size:
            mode = InterpolationMode.BILINEAR if self.bilinear else InterpolationMode.BICUBIC
            x = TF.resize(x, list(self.size), interpolation=mode, antialias=True)
            x = TF.center_crop(x, list(self.size))
        return TF.normalize(x.float(), list(self.mean), list(self.std))


def tensor_transform(model: torch.nn.Module) -> TensorTransform:
    """Return the TensorTransform that prepares image tensors in [0, 1] for `model`."""
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = cfg.get("size", model.visual.image_size)
    size = (size, size) if isinstance(size, int) else tuple(size)
    return TensorTransform(
        size=tuple(int(v) for v in size),
        mean=tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)),
        bilinear=cfg.get("interpolation") == "bilinear",
    )


class _ImageSource(Dataset):
    """Wraps PIL images, paths, tensors or a Dataset so every item becomes one model input."""

    def __init__(self, items, preprocess, tensor_tf):
        self.items, self.preprocess, self.tensor_tf = items, preprocess, tensor_tf

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        item = self.items[i]
        if isinstance(item, (tuple, list)):  # (image, caption, ...) from a Dataset
            item = item[0]
        if isinstance(item, (str, os.PathLike)):
            item = load_image(item)
        if isinstance(item, Image.Image):
            if min(item.size) < 1:
                raise ValueError(f"image {i} is {item.size[0]}x{item.size[1]} pixels: empty")
            if self.preprocess is None:  # no PIL pipeline given: resize/normalise as tensors
                return self.tensor_tf(TF.to_tensor(item.convert("RGB")))
            return self.preprocess(item)
        if isinstance(item, torch.Tensor):
            return self.tensor_tf(image_tensor(item, i))
        raise ValueError(
            f"image {i} is a {type(item).__name__}; want a PIL image, a path or a (C,H,W) tensor"
        )


def image_tensor(x: torch.Tensor, i: int = 0) -> torch.Tensor:
    """Return image tensor `x` as (3, H, W) floats in [0, 1], or raise a ValueError saying what is
    wrong with it.

    Accepted: (C, H, W) or (H, W, C) with 1 (grey), 3 (RGB) or 4 (RGBA, put over white)
    channels, or (H, W) grey; floats in [0, 1], or integers in [0, 255] (uint8, int64, ...).
    Refused: floats in [0, 255] (ambiguous: divide by 255 first), NaN or inf, empty images.
    """
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"image {i} is a tensor of shape {tuple(x.shape)}; want (C,H,W)")
    if x.shape[0] not in (1, 3, 4) and x.shape[-1] in (1, 3, 4):
        x = x.permute(2, 0, 1)  # channels last, as numpy and PIL give them
    if x.shape[0] not in (1, 3, 4):
        raise ValueError(
            f"image {i} has shape {tuple(x.shape)}: want 1, 3 or 4 channels, first or last"
        )
    if x.numel() == 0:
        raise ValueError(f"image {i} is empty (shape {tuple(x.shape)})")
    if x.dtype == torch.bool:
        x = x.float()
    elif not x.is_floating_point():
        if x.min() < 0 or x.max() > 255:
            raise ValueError(f"image {i} is an integer tensor with values outside 0..255")
        x = x.float() / 255.0
    else:
        x = x.float()
        if not torch.isfinite(x).all():
            raise ValueError(f"image {i} holds NaN or infinite values")
        low, high = x.min().item(), x.max().item()
        if high > 1.01 and low >= 0 and high <= 255:
            raise ValueError(
                f"image {i} is a float tensor with values up to {high:.1f}: mmlib wants floats "
                f"in [0, 1]; divide it by 255 (or give uint8)"
            )
        if low < -0.01 or high > 1.01:
            raise ValueError(
                f"image {i} has values in [{low:.2f}, {high:.2f}]; want floats in [0, 1]"
            )
        x = x.clamp(0, 1)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    elif x.shape[0] == 4:
        alpha = x[3:4]
        x = x[:3] * alpha + (1 - alpha)  # over white, as images.to_rgb does
    return x


def _as_items(images) -> Sequence:
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    if isinstance(images, torch.Tensor):
        if images.ndim in (2, 3):
            return [images]
        if images.ndim == 4:
            return images  # indexing gives one image
        raise ValueError(f"images tensor has shape {tuple(images.shape)}; want (N,C,H,W)")
    if isinstance(images, Dataset) and hasattr(images, "__len__"):
        return images
    if isinstance(images, Iterable):
        return list(images)
    raise ValueError(f"images must be images, paths, a tensor or a Dataset; got {type(images)}")


def encode_images(
    model: torch.nn.Module,
    preprocess,
    images,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    """Return L2-normalised float32 image features (N, D) on the CPU.

    `images` is a PIL image, a path, a list of either, a float tensor in [0, 1] (N,C,H,W) or a
    Dataset yielding any of these (or tuples starting with one). Images stream through the
    model `batch_size` at a time in inference mode, so memory stays flat however many there are;
    `num_workers` > 0 decodes and preprocesses them in DataLoader worker processes.
    """
    items = _as_items(images)
    if len(items) == 0:
        raise ValueError("images is empty: give at least one image to encode")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = get_device(device) if device is not None else module_device(model)
    model = to_device(model, dev, "CLIP")
    loader = DataLoader(
        _ImageSource(items, preprocess, tensor_transform(model)),
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=dev.type == "cuda",
    )
    out = []
    bar = tqdm(
        total=len(items), desc="encode images", unit="img", disable=not progress, leave=False
    )
    with torch.inference_mode(), autocast(dev):
        for batch in loader:
            feats = model.encode_image(batch.to(dev, non_blocking=True))
            out.append(F.normalize(feats.float(), dim=-1).cpu())
            bar.update(len(batch))
    bar.close()
    return torch.cat(out)


def encode_texts(
    model: torch.nn.Module,
    tokenizer,
    texts: str | Sequence[str],
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Return L2-normalised float32 text features (N, D) on the CPU for a string or list of them."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: give at least one text to encode")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
    dev = get_device(device) if device is not None else module_device(model)
    model = to_device(model, dev, "CLIP")
    out = []
    starts = range(0, len(texts), batch_size)
    with torch.inference_mode(), autocast(dev):
        for start in tqdm(
            starts, desc="encode texts", disable=not progress or len(starts) < 4, leave=False
        ):
            tokens = tokenizer(texts[start : start + batch_size]).to(dev)
            out.append(F.normalize(model.encode_text(tokens).float(), dim=-1).cpu())
    return torch.cat(out)


def similarity(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: float | None = None
) -> torch.Tensor:
    """Return the (images x texts) cosine-similarity matrix, or softmax probabilities over texts
    when `logit_scale` (CLIP's learned temperature, e.g. 100) is given."""
    if image_features.ndim != 2 or text_features.ndim != 2:
        raise ValueError("image_features and text_features must be 2-D (N, D) tensors")
    if image_features.shape[1] != text_features.shape[1]:
        raise ValueError(
            f"feature sizes differ: images have {image_features.shape[1]}, "
            f"texts have {text_features.shape[1]} (were they encoded by the same model?)"
        )
    sims = (
        F.normalize(image_features.float(), dim=-1) @ F.normalize(text_features.float(), dim=-1).T
    )
    if logit_scale is None:
        return sims
    return (float(logit_scale) * sims).softmax(dim=-1)


# ---------------------------------------------------------------------------------------------
# Scoring pictures against texts with one CLIP or several
# ---------------------------------------------------------------------------------------------


def as_clips(clips) -> list[tuple]:
    """Return one CLIP (model, preprocess, tokenizer) or a sequence of them as a list of triples."""
    first = next(iter(clips), None)
    if first is None:
        raise ValueError("clips is empty: give at least one CLIP (model, preprocess, tokenizer)")
    single = hasattr(clips, "model") or isinstance(first, torch.nn.Module)
    return [tuple(clips)] if single else [tuple(c) for c in clips]


def clip_scores(images: torch.Tensor, prompts: Sequence[str], clips: Sequence) -> torch.Tensor:
    """Return each picture's cosine similarity to its own prompt, summed over the CLIPs."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} pictures for {len(prompts)} prompts")
    total = torch.zeros(len(images))
    for model, _, tokenizer in clips:
        feats = encode_images(model, None, images, progress=False).float().cpu()
        texts = encode_texts(model, tokenizer, list(prompts), progress=False).float().cpu()
        total += (feats * texts).sum(dim=-1)
    return total
