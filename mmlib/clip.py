"""CLIP models: load one by name (tags, files, local-dir:, hf-hub:, mmlib's tiny models), encode
images and texts in batches, and compare them.

Every way of naming a model ends in one open_clip call, so tiny and full models behave alike.
Weights are found on disk *before* open_clip is asked for them: when a file is missing and
the network is not there, `load_clip` raises `WeightsNotFoundError` at once, saying which file
is missing, where to put it and how to point mmlib at it.
"""

from __future__ import annotations

import difflib
import logging
import os
import socket
from collections.abc import Iterable, Sequence
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

from mmlib.env import MMLibError, autocast, get_device
from mmlib.images import load_image

log = logging.getLogger(__name__)

HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
MMLIB_SCHEMA = "mmlib:"


class WeightsNotFoundError(MMLibError, FileNotFoundError):
    """Model weights are not on disk and cannot be downloaded now."""


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
# Finding weights
# ---------------------------------------------------------------------------------------------


def is_offline(timeout: float = 2.0) -> bool:
    """Return True when downloads cannot happen: HF_HUB_OFFLINE is set or the hub is unreachable."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return True
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return False
    except OSError:
        return True


def hf_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the Hugging Face hub cache directory that mmlib reads (and downloads into)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def find_in_hf_cache(
    repo_id: str, filenames: Sequence[str], cache_dir: str | os.PathLike | None = None
) -> Path | None:
    """Return the first of `filenames` present in the hub cache for `repo_id`, or None."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=str(hf_cache_dir(cache_dir)))
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def _missing_weights_message(repo_id: str, filenames: Sequence[str], cache_dir, what: str) -> str:
    cache = hf_cache_dir(cache_dir)
    repo_folder = cache / f"models--{repo_id.replace('/', '--')}"
    url = f"https://huggingface.co/{repo_id}/resolve/main/{filenames[0]}"
    return (
        f"The weights for {what} are not on this machine and cannot be downloaded now "
        f"(offline or HF_HUB_OFFLINE=1).\n"
        f"  Missing file: {filenames[0]} (or {', '.join(filenames[1:]) or 'nothing else'}) "
        f"of the Hugging Face repo {repo_id}\n"
        f"  Download it on a machine with a network: {url}\n"
        f"  Then either:\n"
        f"    - copy the hub cache folder {repo_folder} to this machine (what "
        f"`huggingface-cli download {repo_id} {filenames[0]}` makes), or\n"
        f"    - pass the file itself: load_clip(..., pretrained='/path/to/{filenames[0]}'), or\n"
        f"    - run `mmlib zoo download full` where there is a network and copy MMLIB_HOME over.\n"
        f"  To work without these weights, use the tiny profile (MMLIB_PROFILE=tiny)."
    )


def resolve_hf_file(
    repo_id: str,
    filenames: Sequence[str] = HF_WEIGHT_FILES,
    cache_dir: str | os.PathLike | None = None,
    what: str | None = None,
) -> Path:
    """Return a local path to one of `filenames` of `repo_id`: cached, or downloaded when online."""
    found = find_in_hf_cache(repo_id, filenames, cache_dir)
    if found is not None:
        return found
    what = what or f"hf-hub:{repo_id}"
    if is_offline():
        raise WeightsNotFoundError(_missing_weights_message(repo_id, filenames, cache_dir, what))
    from huggingface_hub import hf_hub_download

    errors = []
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id, filename, cache_dir=str(hf_cache_dir(cache_dir))))
        except Exception as err:  # the hub client raises many kinds; report them all at once
            errors.append(f"{filename}: {type(err).__name__}: {err}")
    raise WeightsNotFoundError(
        _missing_weights_message(repo_id, filenames, cache_dir, what)
        + "\n  Download attempts failed:\n    "
        + "\n    ".join(errors)
    )


def _known_names() -> list[str]:
    from mmlib import zoo

    return [MMLIB_SCHEMA + n for n in zoo.TINY_MODELS] + open_clip.list_models()


def _unknown_model(name: str) -> ValueError:
    names = _known_names()
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" Did you mean {close}?" if close else ""
    return ValueError(
        f"name={name!r} is not a CLIP model mmlib knows.{hint} Use an open_clip model name "
        f"(open_clip.list_models(), e.g. 'ViT-B-32') with pretrained=<tag or file>, "
        f"'local-dir:/path', 'hf-hub:org/repo', or one of mmlib's tiny models "
        f"{[MMLIB_SCHEMA + n for n in __import__('mmlib.zoo').zoo.TINY_MODELS]}."
    )


def _check_checkpoint_file(path: Path, weights_only: bool) -> None:
    """Raise a clear ValueError when `path` is not a checkpoint file torch or safetensors can read."""
    if path.stat().st_size == 0:
        raise ValueError(f"pretrained={str(path)!r} is an empty file, not a checkpoint")
    with open(path, "rb") as fh:
        head = fh.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        raise ValueError(
            f"pretrained={str(path)!r} is an HTML page, not a checkpoint: the download "
            f"probably returned an error page. Download the file again."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                f.keys()
        else:
            torch.load(path, map_location="meta", weights_only=weights_only, mmap=True)
    except Exception as err:
        raise ValueError(
            f"pretrained={str(path)!r} is not a checkpoint mmlib can read "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
            f"Expected a .safetensors file or a torch state_dict (.pt/.pth/.bin)."
        ) from err


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
      - ``"mmlib:tiny-clip"`` (or ``"tiny-clip"``): one of mmlib's tiny models (see `mmlib.zoo`).
    `cache_dir` is the Hugging Face hub cache to read and download into (its default if None).
    Foreign checkpoint files are read with ``weights_only=True`` unless you pass False for a
    file you trust.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty model name string, got {name!r}")
    name = name.strip()
    dev = get_device(device)

    from mmlib import zoo

    bare = name[len(MMLIB_SCHEMA) :] if name.startswith(MMLIB_SCHEMA) else name
    if bare in zoo.TINY_MODELS:
        folder = zoo.tiny_clip_dir(bare)
        return _create("local-dir:" + str(folder), None, dev, name=name, weights=str(folder))

    if name.startswith("local-dir:"):
        folder = Path(name[len("local-dir:") :]).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"name={name!r}: no folder at {str(folder)!r}. A local-dir: folder holds "
                f"open_clip_config.json and the weights (open_clip_model.safetensors)."
            )
        if not (folder / "open_clip_config.json").is_file():
            raise FileNotFoundError(
                f"name={name!r}: {str(folder)!r} has no open_clip_config.json; "
                f"found {sorted(p.name for p in folder.iterdir())[:10]}"
            )
        return _create("local-dir:" + str(folder), None, dev, name=name, weights=str(folder))

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
        _check_checkpoint_file(path, weights_only)
        return _create(
            model_name, path, dev, name=name, weights=str(path), weights_only=weights_only
        )
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    raise FileNotFoundError(
        f"pretrained={pretrained!r} for {name!r} is neither a known tag nor an existing file. "
        f"Known tags for {model_name}: {tags}"
    )


def _resolve_tag(model_name: str, tag: str, tag_cfg: dict, cache_dir) -> Path:
    from mmlib import zoo

    local = zoo.full_weights_path(model_name, tag)
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
        if (model_name, tag) != zoo.FULL_CLIP:
            raise
        where = zoo.FULL_FILES[0].local_path()
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
    tokenizer = open_clip.get_tokenizer(model_name)
    return LoadedClip(model, preprocess, tokenizer, name, weights)


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


def input_size(model: torch.nn.Module) -> tuple[int, int]:
    """Return the (height, width) of the images the model's image encoder takes."""
    size = model.visual.image_size
    return (size, size) if isinstance(size, int) else tuple(size)


def tensor_transform(model: torch.nn.Module):
    """Return a function mapping a float image tensor in [0, 1] (C,H,W or N,C,H,W) to model input."""
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = cfg.get("size", model.visual.image_size)
    size = size if isinstance(size, int) else tuple(size)
    mean = cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)
    std = cfg.get("std", open_clip.OPENAI_DATASET_STD)
    interp = (
        InterpolationMode.BILINEAR
        if cfg.get("interpolation") == "bilinear"
        else InterpolationMode.BICUBIC
    )

    def transform(x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        if tuple(x.shape[-2:]) != ((size, size) if isinstance(size, int) else size):
            x = TF.resize(x, size, interpolation=interp, antialias=True)
            x = TF.center_crop(x, size)
        return TF.normalize(x.float(), mean, std)

    return transform


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
            if self.preprocess is None:  # no PIL pipeline given: resize/normalise as tensors
                return self.tensor_tf(TF.to_tensor(item.convert("RGB")))
            return self.preprocess(item)
        if isinstance(item, torch.Tensor):
            if item.ndim != 3:
                raise ValueError(
                    f"image {i} is a tensor of shape {tuple(item.shape)}; want (C,H,W)"
                )
            return self.tensor_tf(item)
        raise ValueError(
            f"image {i} is a {type(item).__name__}; want a PIL image, a path or a (C,H,W) tensor"
        )


def _as_items(images) -> Sequence:
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            return [images]
        if images.ndim == 4:
            return images  # indexing gives (C,H,W)
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
    dev = get_device(device) if device is not None else next(model.parameters()).device
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
    dev = get_device(device) if device is not None else next(model.parameters()).device
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
