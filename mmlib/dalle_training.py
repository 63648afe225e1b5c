"""Training the DALL-E-style token model (notebook 06): the data it learns from and its loop.

The data: shapes-world scenes as (caption's text ids, the tiny VQGAN's 64 image tokens),
encoded once; the loop: AdamW with warm-up and cosine decay on `transformer.next_token_loss`,
the caption dropped `p_uncond` of the time so that sampling can use classifier-free guidance.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mmlib import toyworld
from mmlib.dalle import WORLD, new_model
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
from mmlib.transformer import TokenTransformer, TransformerConfig, empty_caption, next_token_loss
from mmlib.vqgan import image_tokens


def scene_data(
    model: TokenTransformer,
    vqgan,
    n: int,
    seed: int = 0,
    split: str = "heldout",
    progress: bool = False,
    object_size: str | None = None,
    background: str = "gradient",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (text ids (n, text_len), image tokens (n, 64)) of n single-object scenes.

    With split="heldout" no HELD_OUT_PAIRS appear: the held-out measurement relies on it.
    `object_size` and `background` pick a simpler world (`toyworld.sample_scene`).
    A pure function of its arguments, so callers may cache the two tensors.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    scenes = [
        toyworld.sample_scene(
            seed, i, split, "single", object_size=object_size, background=background
        )
        for i in range(n)
    ]
    text = model.encode_captions([s.caption for s in scenes])
    chunks = []
    batches = range(0, n, 1024)
    for i in tqdm(batches, desc="encode scenes", disable=not bars_on(progress), leave=False):
        images = torch.stack([toyworld.to_tensor(toyworld.render(s)) for s in scenes[i : i + 1024]])
        chunks.append(image_tokens(vqgan, images))
    return text, torch.cat(chunks)


@dataclass
class DalleTrainConfig:
    """Everything that decides a training run besides the model's size."""

    steps: int = 2500
    batch_size: int = 32
    lr: float = 6e-3
    warmup: int = 50
    weight_decay: float = 0.01
    n_scenes: int = 24000  # distinct training scenes, encoded once (batches cycle through them)
    p_uncond: float = 0.1  # captions dropped to [SOT, EOT]: teaches p(image) for `guidance`
    seed: int = 0
    split: str = "heldout"
    # The world it learns (`dalle.WORLD`); None / "gradient" train on the full world.
    object_size: str | None = WORLD["object_size"]
    background: str = WORLD["background"]
    checkpoint_every: int = 250
    log_every: int = 10


def train_dalle(
    config: TransformerConfig | None,
    train_config: DalleTrainConfig | None,
    vqgan,
    tokenizer,
    progress: bool = True,
    folder: str | Path | None = None,
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
    device=None,
) -> tuple[TokenTransformer, History]:
    """Train a TokenTransformer on shapes-world scenes; return (model in eval mode, History).

    AdamW with warm-up and cosine decay; each step a random batch of the encoded scenes.
    With `folder`, checkpoints go there and a run resumes the last one. `data` = the
    (text ids, image tokens) of `scene_data`, when the caller has them cached.
    """
    tc = train_config or DalleTrainConfig()
    if tc.steps < 1 or tc.batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {tc.steps}, {tc.batch_size}")
    if vqgan is None and data is None:
        raise ValueError("give the VQGAN that turns pictures into tokens (or `data`)")
    dev = get_device(device)
    torch.manual_seed(tc.seed)
    model = new_model(tokenizer, config).train()
    tick = time.perf_counter()
    text, image = (
        data
        if data is not None
        else scene_data(
            model, vqgan, tc.n_scenes, tc.seed, tc.split, progress, tc.object_size, tc.background
        )
    )
    data_seconds = time.perf_counter() - tick
    text, image = text.to(dev), image.to(dev)
    model.to(dev)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tc.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=tc.lr,
        betas=(0.9, 0.95),
    )
    saved = json.loads(json.dumps({"model": asdict(model.config), "train": recipe(tc)}))
    start, history = resume(folder, model, optimizer, saved)
    gen = torch.Generator().manual_seed(tc.seed)
    seconds = history.last("seconds", 0.0)
    bar = progress_bar(start, tc.steps, "train DALL-E", progress)
    for step in bar:
        tick = time.perf_counter()
        # batch `step` is the same whether or not the run was resumed
        rows = torch.randint(len(text), (tc.batch_size,), generator=gen.manual_seed(tc.seed + step))
        lr = set_lr(optimizer, cosine_lr(step, tc.steps, tc.warmup, tc.lr, min_ratio=0.05))
        drop = torch.rand(tc.batch_size, generator=gen) < tc.p_uncond
        rows, drop = rows.to(dev), drop.to(dev)
        text_batch = text[rows].clone()
        text_batch[drop] = empty_caption(model.config.text_len).to(dev)
        losses = next_token_loss(model, text_batch, image[rows])
        check_finite(losses["loss"], step, folder)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        seconds += time.perf_counter() - tick
        if due(step, tc.log_every, tc.steps, first=True):
            history.log(
                step,
                loss=losses["loss"],
                text_loss=losses["text"],
                image_loss=losses["image"],
                lr=lr,
                seconds=seconds,
                data_seconds=data_seconds,
            )
            bar.set_postfix(
                image=f"{losses['image'].item():.3f}", text=f"{losses['text'].item():.3f}"
            )
        if folder is not None and due(step, tc.checkpoint_every, tc.steps):
            save_checkpoint(folder, model, optimizer, step + 1, saved, history)
    bar.close()
    return model.eval(), history
