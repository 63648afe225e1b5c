"""Contrastive language-image pretraining: the CLIP loss written out, and the CLIP trainer.

The loss: for a batch of N (image, caption) pairs, the N x N matrix of scaled cosine
similarities should have its largest value of every row and every column on the diagonal.
Cross-entropy over rows (image -> which caption?) and over columns (caption -> which image?),
averaged: the symmetric InfoNCE loss of the CLIP paper.

The trainer runs on one process or many (``torchrun``): each process takes its slice of the
global batch, features are gathered across processes (``gather_with_grad``) and each process
computes the loss of its own rows against all columns (``local_loss``), as OpenCLIP does.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from mmlib import toyworld, world_data
from mmlib.clip import tensor_transform
from mmlib.env import autocast, get_device
from mmlib.store.checkpoints import save_checkpoint
from mmlib.training import (
    History,
    check_finite,
    cosine_lr,
    due,
    progress_bar,
    recipe,
    resume,
    set_lr,
)
from mmlib.zeroshot import evaluate_shapes

MAX_LOGIT_SCALE = math.log(100)  # CLIP clamps the temperature at 1/100


def clip_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float
) -> torch.Tensor:
    """Return CLIP's symmetric contrastive loss for N matching (image, text) feature pairs.

    Features are L2-normalised (N, D); `logit_scale` is exp(learned log-scale), i.e. 1/temperature.
    """
    if image_features.shape != text_features.shape or image_features.ndim != 2:
        raise ValueError(
            f"image_features {tuple(image_features.shape)} and text_features "
            f"{tuple(text_features.shape)} must both be (N, D): one caption per image"
        )
    logits_per_image = logit_scale * image_features @ text_features.T  # (N, N): row i = image i
    logits_per_text = logits_per_image.T  # row j = caption j
    labels = torch.arange(len(image_features), device=image_features.device)  # matches: diagonal
    return (
        F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)
    ) / 2


def gather_features(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    local_loss: bool = True,
    gather_with_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the features of every process, concatenated in rank order.

    With `gather_with_grad` the gradient flows back to the process that made each feature;
    without it only the local slice keeps its gradient (then `local_loss` must be False).
    """
    if gather_with_grad:
        import torch.distributed.nn.functional as dist_nn

        return torch.cat(dist_nn.all_gather(image_features)), torch.cat(
            dist_nn.all_gather(text_features)
        )
    if local_loss:
        raise ValueError("local_loss=True needs gather_with_grad=True (else gradients are lost)")
    world, rank = dist.get_world_size(), dist.get_rank()
    images = [torch.zeros_like(image_features) for _ in range(world)]
    texts = [torch.zeros_like(text_features) for _ in range(world)]
    dist.all_gather(images, image_features)
    dist.all_gather(texts, text_features)
    images[rank], texts[rank] = image_features, text_features  # keep the local gradient
    return torch.cat(images), torch.cat(texts)


def distributed_clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    local_loss: bool = True,
    gather_with_grad: bool = True,
) -> torch.Tensor:
    """Return the CLIP loss of the global batch when each process holds one slice of it."""
    all_images, all_texts = gather_features(
        image_features, text_features, local_loss, gather_with_grad
    )
    if not local_loss:
        return clip_loss(all_images, all_texts, logit_scale)
    n, rank = len(image_features), dist.get_rank()
    labels = torch.arange(n, device=image_features.device) + n * rank
    logits_per_image = logit_scale * image_features @ all_texts.T
    logits_per_text = logit_scale * text_features @ all_images.T
    return (
        F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)
    ) / 2


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


@dataclass
class ClipTrainConfig:
    """Everything that decides a CLIP training run (a checkpoint remembers it)."""

    steps: int = 600
    batch_size: int = 128  # global: split over processes under torchrun
    lr: float = 3e-3
    warmup: int = 60
    weight_decay: float = 0.1
    seed: int = 0
    split: str = "heldout"
    eval_every: int = 100  # zero-shot accuracy on seen / held-out pairs every N steps (0: never)
    eval_per_pair: int = 6
    checkpoint_every: int = 200
    log_every: int = 10
    # Processes rendering batches beside the training. 0 by default: torch's threads already
    # fill every core, and a worker would take time from them (`mmlib bench train` measured it:
    # a worker pays only when a core is idle, and `zoo prepare` keeps every core busy).
    num_workers: int = 0
    local_loss: bool = True
    gather_with_grad: bool = True

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError(
                f"steps >= 1 and batch_size >= 2 needed, got {self.steps}, {self.batch_size}"
            )
        toyworld.allowed_pairs(self.split)


class ShapesBatches(IterableDataset):
    """Batches of (normalised images, tokens) for steps [start, steps): batch s is the same on
    every machine, and under torchrun each process takes its own slice of it."""

    def __init__(
        self,
        config: ClipTrainConfig,
        tokenizer,
        normalize,
        start: int = 0,
        rank: int = 0,
        world: int = 1,
    ):
        if config.batch_size % world:
            raise ValueError(
                f"batch_size {config.batch_size} does not split over {world} processes"
            )
        self.config, self.tokenizer, self.normalize = config, tokenizer, normalize
        self.start, self.rank, self.world = start, rank, world
        self.world_data = world_data.ShapesWorld(
            config.steps * config.batch_size, config.seed, config.split
        )

    def batch(self, step: int):
        local = self.config.batch_size // self.world
        first = step * self.config.batch_size + self.rank * local
        items = [self.world_data[i] for i in range(first, first + local)]
        images = torch.stack([it[0] for it in items])
        return self.normalize(images), self.tokenizer([it[1] for it in items])

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        workers, wid = (info.num_workers, info.id) if info else (1, 0)
        for step in range(self.start + wid, self.config.steps, workers):
            yield self.batch(step)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # As CLIP and OpenCLIP: no weight decay on gains, biases, embeddings' scale and temperature.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if skip else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def train_clip(
    model: torch.nn.Module,
    tokenizer,
    config: ClipTrainConfig | None = None,
    folder: str | Path | None = None,
    device=None,
    progress: bool = True,
) -> History:
    """Train `model` (an open_clip CLIP) on the shapes world; return its history.

    With `folder`, checkpoints are written there and a run finds and resumes the last one.
    Under torchrun (torch.distributed initialised) the model is wrapped in
    DistributedDataParallel and the loss is computed as OpenCLIP does across processes.
    """
    config = config or ClipTrainConfig()
    dev = get_device(device)
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    model.to(dev).train()
    fused = {"fused": True} if dev.type in ("cpu", "cuda") else {}  # one kernel for all params
    optimizer = torch.optim.AdamW(
        _param_groups(model, config.weight_decay),
        lr=config.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
        **fused,
    )
    start, history = resume(folder, model, optimizer, recipe(config))
    if distributed and dev.type == "cuda":  # batch statistics over the global batch, as 1 GPU
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    data = ShapesBatches(config, tokenizer, tensor_transform(model), start, rank, world)
    loader = DataLoader(
        data, batch_size=None, num_workers=config.num_workers, persistent_workers=False
    )
    bar = progress_bar(start, config.steps, "train CLIP", progress and rank == 0)
    seconds = history.last("seconds", 0.0)  # training time, without evaluation and checkpoints
    tick = time.perf_counter()
    for step, (images, tokens) in zip(bar, loader, strict=False):
        lr = set_lr(optimizer, cosine_lr(step, config.steps, config.warmup, config.lr))
        with autocast(dev):
            image_features, text_features, scale = net(images.to(dev), tokens.to(dev))
            if distributed:
                loss = distributed_clip_loss(
                    image_features, text_features, scale, config.local_loss, config.gather_with_grad
                )
            else:
                loss = clip_loss(image_features, text_features, scale)
        check_finite(loss, step, folder)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        seconds += time.perf_counter() - tick
        if due(step, config.log_every, config.steps, first=True):
            with torch.no_grad():
                sims = image_features.float() @ text_features.float().T
                acc = (sims.argmax(dim=1) == torch.arange(len(sims), device=sims.device)).float()
            history.log(
                step,
                loss=loss.item(),
                temperature=1 / scale.item(),
                lr=lr,
                batch_accuracy=acc.mean().item(),
                seconds=seconds,
            )
            bar.set_postfix(loss=f"{loss.item():.3f}", T=f"{1 / scale.item():.3f}")
        if rank == 0 and due(step, config.eval_every, config.steps):
            model.eval()
            zs = evaluate_shapes(
                model, None, tokenizer, config.eval_per_pair, device=dev, split=config.split
            )
            model.train()
            history.log(
                step, zeroshot_seen=zs["seen"], zeroshot_heldout=zs["heldout"], seconds=seconds
            )
        if rank == 0 and folder is not None and due(step, config.checkpoint_every, config.steps):
            save_checkpoint(folder, model, optimizer, step + 1, recipe(config), history)
        tick = time.perf_counter()  # evaluation and checkpoints do not count as training time
    bar.close()
    model.eval()
    return history
