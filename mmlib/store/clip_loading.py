"""Loading a CLIP by name, and saving one: open_clip tags and files, ``local-dir:`` folders,
``hf-hub:`` repositories, and ``mmlib:`` names registered by the course layer.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch

from mmlib.env import MMLibError, get_device
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
    the course layer (`mmlib.tiny_models`) registers its tiny models here; `source` names who did."""
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
        f"course's tiny models are registered by its course layer: `import mmlib.tiny_models` (or "
        f"load them with `mmlib.zoo.get_clip()`); your own with mmlib.store.clip_loading.register_model()."
    )


def _unknown_model(name: str) -> ValueError:
    names = list(registered_models()) + open_clip.list_models()
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" Did you mean {close}?" if close else ""
    return ValueError(
        f"name={name!r} is not a CLIP model mmlib knows.{hint} Use an open_clip model name "
        f"(open_clip.list_models(), e.g. 'ViT-B-32') with pretrained=<tag or file>, "
        f"'local-dir:/path', 'hf-hub:org/repo', or a registered mmlib model "
        f"{sorted(registered_models()) or '(none registered: import mmlib.tiny_models)'}."
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
        course's tiny models are registered by `mmlib.tiny_models`).
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
