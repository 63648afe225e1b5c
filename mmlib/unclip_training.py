"""Training unCLIP's two models (notebook 07): the data they learn from, and one loop for both.

Both learn the world of `unclip.WORLD` (the token model's) from held-out-split scenes only, so
the held-out pairs measure composition. The data of a scene: its caption, the tiny CLIP's
normalised embeddings of the caption and of the picture, and (for the decoder) the tiny VQGAN's
latents of the picture. Each model is a `mmlib.diffusion` denoiser trained with
`diffusion_loss`; both drop their condition `p_uncond` of the time, which classifier-free
guidance needs, and both return the moving average of their weights (`_train` says why).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from mmlib.clip import encode_images, encode_texts
from mmlib.diffusion import (
    DenoiserConfig,
    UNetConfig,
    VectorDenoiser,
    cosine_schedule,
    diffusion_loss,
)
from mmlib.env import get_device
from mmlib.store.checkpoints import save_checkpoint
from mmlib.training import (
    History,
    bars_on,
    check_finite,
    cosine_lr,
    due,
    progress_bar,
    recipe,
    resume,
    set_lr,
)
from mmlib.unclip import (
    DECODER_PREDICTS,
    SCHEDULE_STEPS,
    LatentDecoder,
    render,
    scaled,
    world_scenes,
)
from mmlib.vqgan import to_model_range


@torch.no_grad()
def vqgan_latents(vqgan, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Return the VQGAN's quantised latents (N, C, h, w) of pictures in [0, 1]: what its decoder
    reads, and what unCLIP's decoder learns to draw."""
    dev = next(vqgan.parameters()).device
    out = [
        vqgan.encode(to_model_range(images[i : i + batch_size].to(dev)))[0].cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out)


def scene_data(
    clip, n: int, seed: int = 0, split: str = "heldout", vqgan=None, progress: bool = False
) -> dict[str, torch.Tensor | list[str]]:
    """Return {"captions", "text" (N, D), "image" (N, D)} for n scenes of WORLD: the captions
    and the CLIP's normalised embeddings of them and of their pictures; with `vqgan`, also
    "latents" (N, C, 8, 8). A pure function of its arguments."""
    model, _, tokenizer = clip
    scenes = world_scenes(n, seed, split)
    captions = [s.caption for s in scenes]
    image, latents = [], []
    show = bars_on(progress)
    for i in tqdm(range(0, n, 2048), desc="encode scenes", disable=not show, leave=False):
        pictures = render(scenes[i : i + 2048])
        image.append(encode_images(model, None, pictures, batch_size=512, progress=False))
        if vqgan is not None:
            latents.append(vqgan_latents(vqgan, pictures))
    data = {
        "captions": captions,
        "text": encode_texts(model, tokenizer, captions, progress=False),
        "image": torch.cat(image),
    }
    if vqgan is not None:
        data["latents"] = torch.cat(latents)
    return data


@dataclass
class PriorTrainConfig:
    """Everything that decides a prior's training run besides the network's size."""

    steps: int = 1000  # its loss stops falling after about 600 (docs/unclip-recipe.md)
    batch_size: int = 256
    lr: float = 1e-3
    warmup: int = 100
    n_scenes: int = 10000
    p_uncond: float = 0.1  # the paper drops the text 10% of the time
    ema_decay: float = 0.995
    seed: int = 0
    split: str = "heldout"
    checkpoint_every: int = 500
    log_every: int = 20


def train_prior(
    clip,
    config: PriorTrainConfig | None = None,
    network: DenoiserConfig | None = None,
    data: dict | None = None,
    folder: str | Path | None = None,
    progress: bool = True,
    device=None,
    on_log=None,
) -> tuple[VectorDenoiser, History]:
    """Train a prior on `clip`'s embeddings of WORLD's scenes; return (the moving average of its
    weights, in eval mode, History): diffusion models sample better from it (`_train`). `data` =
    `scene_data` of the same scenes, when the caller has it; `on_log(step, network)` is called
    at every logged step (the notebook keeps samples by step with it)."""
    tc = config or PriorTrainConfig()
    dev = _start(tc, device)
    tick = time.perf_counter()
    data = data or scene_data(clip, tc.n_scenes, tc.seed, tc.split, progress=progress)
    data_seconds = time.perf_counter() - tick
    net = VectorDenoiser(network or DenoiserConfig(dim=data["image"].shape[1])).to(dev).train()
    x0 = scaled(data["image"], net.config.dim).to(dev)
    cond = scaled(data["text"], net.config.dim).to(dev)
    return _train(
        net, net.config, tc, x0, cond, "x0", "train prior", folder, progress, data_seconds, on_log
    )


def _start(tc: PriorTrainConfig | DecoderTrainConfig, device) -> torch.device:
    """Check a training config, seed torch with it; return the device to train on."""
    if tc.steps < 1 or tc.batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {tc.steps}, {tc.batch_size}")
    torch.manual_seed(tc.seed)
    return get_device(device)


def _train(
    net: nn.Module,
    network,
    tc: PriorTrainConfig | DecoderTrainConfig,
    x0: torch.Tensor,
    cond: torch.Tensor,
    predict: str,
    desc: str,
    folder: str | Path | None,
    progress: bool,
    data_seconds: float,
    on_log,
) -> tuple[nn.Module, History]:
    """The loop both unCLIP models share: a random batch, `diffusion_loss`, a step, and an
    exponential moving average of the weights (`ema`), which is what it returns: diffusion
    models sample better from the average of their last few hundred steps' weights than from
    the last step's (Ho et al. 2020, Appendix B). Checkpoints keep both, and the recipe
    (`network`, the config `tc`) a resume must match."""
    saved = json.loads(json.dumps({"network": asdict(network), "train": recipe(tc)}))
    optimizer = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=0.0)
    alpha_bar = cosine_schedule(SCHEDULE_STEPS)
    ema = copy.deepcopy(net).requires_grad_(False)
    both = nn.ModuleDict({"net": net, "ema": ema})  # what a checkpoint saves and resumes
    start, history = resume(folder, both, optimizer, saved)
    gen = torch.Generator()
    seconds = history.last("seconds", 0.0)
    bar = progress_bar(start, tc.steps, desc, progress)
    for step in bar:
        tick = time.perf_counter()
        gen.manual_seed(tc.seed * 1_000_003 + step)  # batch `step` is the same after a resume
        rows = torch.randint(len(x0), (tc.batch_size,), generator=gen).to(x0.device)
        lr = set_lr(optimizer, cosine_lr(step, tc.steps, tc.warmup, tc.lr, min_ratio=0.05))
        loss = diffusion_loss(net, x0[rows], cond[rows], alpha_bar, gen, tc.p_uncond, predict)
        check_finite(loss, step, folder)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(tc.ema_decay, (step + 1) / (step + 10))  # a short warm-up of the average
            for e, p in zip(ema.parameters(), net.parameters(), strict=True):
                e.lerp_(p, 1 - decay)
        seconds += time.perf_counter() - tick
        if due(step, tc.log_every, tc.steps, first=True):
            history.log(step, loss=loss, lr=lr, seconds=seconds, data_seconds=data_seconds)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if on_log is not None:
                on_log(step, ema.eval())
        if folder is not None and due(step, tc.checkpoint_every, tc.steps):
            save_checkpoint(folder, both, optimizer, step + 1, saved, history)
    bar.close()
    return ema.eval(), history


@dataclass
class DecoderTrainConfig:
    """Everything that decides a decoder's training run besides the network's size."""

    steps: int = 3000  # docs/unclip-recipe.md, "The oracle's ceiling"
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    n_scenes: int = 8000
    p_uncond: float = 0.1  # the paper drops the CLIP embedding 10% of the time
    ema_decay: float = 0.995
    seed: int = 0
    split: str = "heldout"
    checkpoint_every: int = 500
    log_every: int = 20


def train_decoder(
    clip,
    vqgan,
    config: DecoderTrainConfig | None = None,
    network: UNetConfig | None = None,
    data: dict | None = None,
    folder: str | Path | None = None,
    progress: bool = True,
    device=None,
    on_log=None,
) -> tuple[LatentDecoder, History]:
    """Train a decoder from `clip`'s image embeddings to `vqgan`'s latents of WORLD's scenes;
    return (the moving average of its weights, in eval mode, History). `data`, `on_log`: as `train_prior`."""
    tc = config or DecoderTrainConfig()
    dev = _start(tc, device)
    tick = time.perf_counter()
    if data is None or "latents" not in data:
        data = scene_data(clip, tc.n_scenes, tc.seed, tc.split, vqgan, progress)
    data_seconds = time.perf_counter() - tick
    latents = data["latents"]
    config = network or UNetConfig(channels=latents.shape[1], cond_dim=data["image"].shape[1])
    decoder = LatentDecoder(config)
    decoder.mean.copy_(latents.mean(dim=(0, 2, 3)))
    decoder.std.copy_(latents.std(dim=(0, 2, 3)).clamp_min(1e-6))
    # Channels-last: a CPU takes less time per training step, the convolutions being most of it
    # (docs/measurements.json, decoder_channels_last); the weights come back as usual.
    decoder.to(dev, memory_format=torch.channels_last).train()
    x0 = decoder.standardise(latents.to(dev)).contiguous(memory_format=torch.channels_last)
    cond = scaled(data["image"], config.cond_dim).to(dev)
    net, history = _train(
        decoder,
        config,
        tc,
        x0,
        cond,
        DECODER_PREDICTS,
        "train decoder",
        folder,
        progress,
        data_seconds,
        on_log,
    )
    return net.to(memory_format=torch.contiguous_format), history
