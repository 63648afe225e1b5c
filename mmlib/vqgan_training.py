"""Training the course's tiny VQGAN on the shapes world: reconstruction and codebook losses, then
taming's patch discriminator with its adaptive weight, dead codes re-seeded from encoder
outputs; and how to measure one (PSNR, edge contrast, codebook usage).

The model itself (encoder, quantiser, decoder, official checkpoints) is `mmlib.vqgan`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from taming.modules.discriminator.model import NLayerDiscriminator, weights_init

from mmlib import world_data
from mmlib.env import get_device
from mmlib.store.checkpoints import save_checkpoint
from mmlib.training import check_finite, cosine_lr, due, progress_bar, recipe, resume, set_lr
from mmlib.vqgan import VQGAN, from_model_range, to_model_range

# f = 4 on 32 px images: an 8 x 8 grid of tokens, each covering 4 x 4 pixels. A small shape
# (about 11 px across) spans 3 x 3 tokens, so the grid keeps its outline; f = 8 (4 x 4 tokens)
# would blur small shapes into one or two tokens. 64 tokens also keep notebook 06's sequences
# short. 256 codes cover the shapes world's parts (8 colours x edges and corners, backgrounds)
# while few enough are used often enough to stay alive. Channels are multiples of 32 because
# taming's GroupNorm uses 32 groups.
TINY_VQGAN_DDCONFIG = {
    "double_z": False,
    "z_channels": 32,
    "resolution": 32,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 32,
    "ch_mult": [1, 1, 2],
    "num_res_blocks": 1,
    "attn_resolutions": [],
    "dropout": 0.0,
}
TINY_VQGAN = {"n_embed": 256, "embed_dim": 32, "ddconfig": TINY_VQGAN_DDCONFIG}


def new_tiny_vqgan(seed: int = 0) -> VQGAN:
    """Return an untrained VQGAN of the course's tiny size (`TINY_VQGAN`), its weights drawn from
    `seed` (the global random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VQGAN(**TINY_VQGAN)


@dataclass
class VQGANTrainConfig:
    """Everything that decides a tiny-VQGAN training run."""

    steps: int = 1000  # fewer cost the token model its goal (docs/measurements.json, vqgan_steps)
    batch_size: int = 32
    crop: int = 24  # random crops of this side until `disc_start`, then whole pictures (0: none)
    lr: float = 1e-3
    warmup: int = 50
    disc_start: int = 600  # the patch discriminator joins after the autoencoder works
    disc_weight: float = 0.1
    disc_lr: float = 4e-4
    seed: int = 0
    split: str = "all"
    restart_every: int = 100  # dead-code fix: re-seed unused codes from encoder outputs
    eval_every: int = 250
    checkpoint_every: int = 250
    log_every: int = 10


def random_crops(images: torch.Tensor, side: int, seed: int, step: int) -> torch.Tensor:
    """Return a random `side` x `side` crop of each image (B, C, H, W), drawn from (seed, step)
    (the images themselves when they are not larger than `side`, or `side` is 0).

    The VQGAN is convolutional: it learns its parts (edges, corners, colours) from crops and
    decodes whole pictures after. A 24 px crop of a 32 px picture costs (24/32)^2 of the compute.
    The course crops until the discriminator joins, then trains on whole pictures: as sharp as
    whole pictures throughout in less time, where crops throughout lost sharpness and smaller
    crops lost the large shapes' outlines (docs/measurements.json, "decisions", "vqgan_crops").
    """
    height, width = images.shape[-2:]
    if side <= 0 or side >= min(height, width):
        return images
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    ys = torch.randint(0, height - side + 1, (len(images),), generator=gen).tolist()
    xs = torch.randint(0, width - side + 1, (len(images),), generator=gen).tolist()
    return torch.stack(
        [im[:, y : y + side, x : x + side] for im, y, x in zip(images, ys, xs, strict=True)]
    )


def psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Return the peak signal-to-noise ratio in dB of images in [0, 1] against a reference."""
    mse = F.mse_loss(images.float().clamp(0, 1), reference.float()).item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def codebook_usage(indices: torch.Tensor, n_embed: int) -> dict:
    """Return the perplexity (effective number of codes used) and the fraction of codes used."""
    counts = torch.bincount(indices.flatten(), minlength=n_embed).float()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {
        "perplexity": entropy.exp().item(),
        "used": (counts > 0).float().mean().item(),
        "counts": counts,
    }


def _gradient_magnitude(images: torch.Tensor) -> torch.Tensor:
    # forward differences across and down, summed over the colour channels: (B, H - 1, W - 1)
    dx = images[..., :-1, 1:] - images[..., :-1, :-1]
    dy = images[..., 1:, :-1] - images[..., :-1, :-1]
    return (dx.pow(2) + dy.pow(2)).sum(dim=-3).sqrt()


def edge_contrast(images: torch.Tensor, reference: torch.Tensor, threshold: float = 0.1) -> float:
    """Return how crisp the edges of `images` are next to `reference`'s (both (B, 3, H, W) in [0, 1]).

    On the pixels where the reference has an edge (gradient magnitude above `threshold`), the
    mean gradient magnitude of `images` divided by the reference's: 1 keeps the edges as sharp,
    blur lowers it. Ripples in flat regions do not count, only the reference's edges.
    """
    if images.shape != reference.shape or images.ndim != 4:
        raise ValueError(
            f"images and reference must both be (B, 3, H, W), got {tuple(images.shape)} "
            f"and {tuple(reference.shape)}"
        )
    ref = _gradient_magnitude(reference.float())
    edges = ref > threshold
    if not edges.any():
        raise ValueError(f"the reference has no edges above threshold={threshold}: lower it")
    own = _gradient_magnitude(images.float().clamp(0, 1))
    return (own[edges].mean() / ref[edges].mean()).item()


def _hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())


def _adaptive_weight(rec_loss, g_loss, last_layer, disc_weight: float) -> torch.Tensor:
    # taming's balance: scale the adversarial gradient to the size of the reconstruction one
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (g_grad.norm() + 1e-4)
    return weight.clamp(0, 1e4).detach() * disc_weight


@torch.no_grad()
def reconstruct(model: VQGAN, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Return the model's reconstructions (B, 3, H, W) in [0, 1] of images in [0, 1]: encoded to
    tokens and decoded again, in eval mode, on the CPU."""
    dev = next(model.parameters()).device
    model.eval()
    out = [
        from_model_range(model(to_model_range(images[i : i + batch_size].to(dev)))[0]).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out)


@torch.no_grad()
def evaluate_vqgan(model: VQGAN, n: int = 256, seed: int = 4321) -> dict:
    """Return PSNR and codebook usage on `n` held-out shapes-world images (a seed not trained on)."""
    world = world_data.ShapesWorld(n, seed=seed, split="all")
    images = torch.stack([world[i][0] for i in range(n)])
    dev = next(model.parameters()).device
    model.eval()
    recon, _, indices = model(to_model_range(images.to(dev)))
    usage = codebook_usage(indices.cpu(), model.n_embed)
    return {
        "psnr": psnr(from_model_range(recon).cpu(), images),
        "perplexity": usage["perplexity"],
        "codebook_used": usage["used"],
        "counts": usage["counts"],
    }


def train_vqgan(
    model: VQGAN,
    config: VQGANTrainConfig | None = None,
    folder: str | Path | None = None,
    progress: bool = True,
    device=None,
    callback=None,
):
    """Train a VQGAN on shapes-world images; return its History (loss, PSNR, codebook use).

    Reconstruction (L1 + L2) and codebook/commitment losses from the start, on random `crop` px
    crops of the pictures; after `disc_start` steps taming's patch discriminator joins with a
    hinge loss, its gradient balanced against the reconstruction's, on whole pictures. Unused
    codes are re-seeded from encoder outputs every `restart_every` steps. Checkpoints and resume
    as every trainer of the course.
    `callback(step, model)` after every evaluation (to watch the training, notebook 04).
    """
    config = config or VQGANTrainConfig()
    if config.crop and config.crop % model.factor:
        raise ValueError(
            f"crop={config.crop} is not a multiple of the VQGAN's factor {model.factor}: its "
            f"reconstructions would not match the crops; use a multiple, or 0 for whole pictures"
        )
    dev = get_device(device)
    torch.manual_seed(config.seed)
    disc = NLayerDiscriminator(input_nc=3, ndf=32, n_layers=2).apply(weights_init)
    # Which codes were used since the last dead-code restart: checkpointed with the weights, so a
    # resumed run re-seeds the same codes as one that never stopped.
    usage = nn.Module()
    usage.register_buffer("counts", torch.zeros(model.n_embed))
    both = nn.ModuleDict({"vqgan": model, "disc": disc, "usage": usage}).to(dev)
    opt_g = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.disc_lr, betas=(0.5, 0.9))
    start, history = resume(folder, both, [opt_g, opt_d], recipe(config))
    world = world_data.ShapesWorld(config.steps * config.batch_size, config.seed, config.split)
    seconds, tick = history.last("seconds", 0.0), time.perf_counter()
    last_layer = model.decoder.conv_out.weight
    bar = progress_bar(start, config.steps, "train VQGAN", progress)
    for step in bar:
        model.train()
        first = step * config.batch_size
        batch = torch.stack([world[i][0] for i in range(first, first + config.batch_size)])
        if step < config.disc_start:  # the autoencoder learns its parts on crops
            batch = random_crops(batch, config.crop, config.seed, step)
        real = to_model_range(batch.to(dev))
        set_lr(opt_g, cosine_lr(step, config.steps, config.warmup, config.lr, min_ratio=0.05))
        z = model.encode_latent(real)
        z_q, qloss, indices = model.quantize(z)
        recon = model.decode(z_q)
        rec_loss = F.l1_loss(recon, real) + F.mse_loss(recon, real)
        loss = rec_loss + qloss
        gan_on = step >= config.disc_start
        if gan_on:
            g_loss = -disc(recon).mean()
            loss = (
                loss + _adaptive_weight(rec_loss, g_loss, last_layer, config.disc_weight) * g_loss
            )
        check_finite(loss, step, folder)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        d_loss = torch.zeros(())
        if gan_on:
            d_loss = _hinge_d_loss(disc(real), disc(recon.detach()))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        usage.counts += torch.bincount(indices.flatten(), minlength=model.n_embed).float()
        if due(step, config.restart_every, 0):
            dead = (usage.counts == 0).nonzero().flatten()
            if len(dead):  # re-seed dead codes with random encoder outputs of this batch
                flat = z.detach().permute(0, 2, 3, 1).reshape(-1, model.embed_dim)
                pick = flat[torch.randint(0, len(flat), (len(dead),)).to(dev)]
                model.quantize.embedding.weight.data[dead] = pick
            usage.counts.zero_()
        seconds += time.perf_counter() - tick
        if due(step, config.log_every, config.steps, first=True):
            history.log(
                step,
                loss=loss.item(),
                rec_loss=rec_loss.item(),
                codebook_loss=qloss.item(),
                disc_loss=d_loss.item(),
                seconds=seconds,
                batch_perplexity=codebook_usage(indices.cpu(), model.n_embed)["perplexity"],
            )
            bar.set_postfix(rec=f"{rec_loss.item():.3f}")
        if due(step, config.eval_every, config.steps):
            ev = evaluate_vqgan(model)
            history.log(
                step,
                psnr=ev["psnr"],
                codebook_used=ev["codebook_used"],
                perplexity=ev["perplexity"],
                seconds=seconds,
            )
            if callback is not None:
                callback(step + 1, model)
                model.train()
        if folder is not None and due(step, config.checkpoint_every, config.steps):
            save_checkpoint(folder, both, [opt_g, opt_d], step + 1, recipe(config), history)
        tick = time.perf_counter()
    bar.close()
    model.eval()
    return history
