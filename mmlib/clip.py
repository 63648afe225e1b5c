"""CLIP at work: encode images and texts in batches (any mix of PIL images, paths and tensors),
compare them, and score pictures against prompts with one CLIP or several.

Loading a CLIP by name (open_clip tags and files, local-dir:, hf-hub:, the course's registered
mmlib: names) and saving one is `mmlib.store.clip_loading`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF
from tqdm.auto import tqdm

from mmlib.env import autocast, get_device, module_device, to_device
from mmlib.images import load_image

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
