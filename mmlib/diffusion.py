"""Diffusion, written to be read (notebook 07): a noise schedule, the training step, a DDIM sampler
with classifier-free guidance, and the two small networks of unCLIP in miniature.

A diffusion model learns to undo noise. Training takes a clean x0, picks a step t, mixes in
Gaussian noise by the schedule's alpha_bar_t,

    x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise,

and asks a network to predict the noise (or x0 itself) from (x_t, t, condition): a plain MSE.
Sampling starts from pure noise and walks t down, each step estimating x0 and stepping to a less
noisy x_t (DDIM, Song et al. 2021, with eta = 0: deterministic, any subset of the steps).
Classifier-free guidance (Ho & Salimans 2022) runs the network with and without its condition
and extrapolates: out = out_uncond + w (out_cond - out_uncond), so w = 1 is no guidance. Here the
condition is a vector (a CLIP embedding) and "without" is the zero vector, which training shows
the network `p_uncond` of the time.

The networks: `UNet`, a small U-Net over a grid of latents (unCLIP's decoder, on the tiny
VQGAN's 8 x 8 latents), and `VectorDenoiser`, residual MLP blocks over one vector (unCLIP's
prior, on a CLIP image embedding). The lesson around them is `mmlib.unclip`.

Shapes: B batch, C channels, H x W grid, D vector size, T schedule steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

# What a network predicts: the noise, the clean input, or v = sqrt(a) noise - sqrt(1 - a) x0
# (Salimans & Ho 2022), a mix that stays well-scaled at every step.
PREDICTIONS = ("eps", "x0", "v")

# ---------------------------------------------------------------------------------------------
# The schedule, and the forward (noising) process
# ---------------------------------------------------------------------------------------------


def cosine_schedule(steps: int = 1000, s: float = 0.008) -> torch.Tensor:
    """Return alpha_bar (steps,): the share of the signal's variance left at each step t.

    The cosine schedule (Nichol & Dhariwal 2021, eq. 17): alpha_bar(t) = f(t) / f(0) with
    f(t) = cos^2((t / T + s) / (1 + s) * pi / 2), each step's beta clipped at 0.999 so the last
    steps are noise but not a division by zero.
    """
    if steps < 2:
        raise ValueError(f"a schedule needs steps >= 2, got {steps}")
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0).float()


def _per_row(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.device).view(-1, *([1] * (like.ndim - 1)))


def add_noise(x0: torch.Tensor, noise: torch.Tensor, alpha_bar_t: torch.Tensor) -> torch.Tensor:
    """Return x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise (alpha_bar_t: one per row)."""
    a = _per_row(alpha_bar_t, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def diffusion_loss(
    model: nn.Module,
    x0: torch.Tensor,
    cond: torch.Tensor,
    alpha_bar: torch.Tensor,
    generator: torch.Generator,
    p_uncond: float = 0.1,
    predict: str = "eps",
) -> torch.Tensor:
    """Return one training step's loss: noise x0 at a random step, predict, MSE.

    Each row gets its own step t and noise; its condition is zeroed with probability `p_uncond`
    (so the same network learns the unconditional model that guidance needs). The random numbers
    come from `generator` on the CPU: the same seed draws the same batch on any device.
    """
    if predict not in PREDICTIONS:
        raise ValueError(f"predict={predict!r}; choose one of {PREDICTIONS}")
    b = x0.shape[0]
    t = torch.randint(len(alpha_bar), (b,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    keep = (torch.rand(b, generator=generator) >= p_uncond).float().to(x0.device)
    x_t = add_noise(x0, noise, alpha_bar[t])
    out = model(x_t, t.to(x0.device), cond * keep[:, None])
    a = _per_row(alpha_bar[t], x0)
    target = {"eps": noise, "x0": x0, "v": a.sqrt() * noise - (1 - a).sqrt() * x0}[predict]
    return F.mse_loss(out, target)


# ---------------------------------------------------------------------------------------------
# Sampling: guidance and DDIM
# ---------------------------------------------------------------------------------------------


def check_guidance(guidance: float) -> float:
    """Return `guidance` as a float, or raise ValueError unless it is finite and >= 0."""
    try:
        g = float(guidance)
    except (TypeError, ValueError):
        g = float("nan")
    if not math.isfinite(g) or g < 0:
        raise ValueError(
            f"guidance must be a finite number >= 0 (1 = no guidance, more follows the condition "
            f"harder), got {guidance!r}"
        )
    return g


def guided(
    model: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, guidance: float
) -> torch.Tensor:
    """Return the network's output with classifier-free guidance: u + w (c - u), where c is the
    output with `cond` and u with the zero condition; w = 1 runs the network once, unguided."""
    if guidance == 1.0:
        return model(x, t, cond)
    both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, torch.zeros_like(cond)]))
    c, u = both.chunk(2)
    return u + guidance * (c - u)


def ddim_steps(schedule_steps: int, steps: int) -> list[int]:
    """Return the `steps` schedule steps DDIM visits, from the noisiest (T - 1) down to 0."""
    if not isinstance(steps, int) or not 1 <= steps <= schedule_steps:
        raise ValueError(f"steps must be between 1 and {schedule_steps}, got {steps!r}")
    return torch.linspace(schedule_steps - 1, 0, int(steps)).round().long().tolist()


def ddim_step(
    out: torch.Tensor,
    x: torch.Tensor,
    alpha_bar_t: float,
    alpha_bar_next: float,
    predict: str = "eps",
    clip_x0: float | None = None,
) -> torch.Tensor:
    """Return x at the next (less noisy) step from the network's output at this one (eta = 0).

    Both estimates come from one output: x0 = (x - sqrt(1 - a) eps) / sqrt(a), or the other way
    round; then x_next = sqrt(a_next) x0 + sqrt(1 - a_next) eps. `clip_x0` bounds the x0
    estimate (the data's range), and eps follows it.
    """
    a, a_next = float(alpha_bar_t), float(alpha_bar_next)
    if predict == "eps":
        eps = out
        x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
    elif predict == "x0":
        x0 = out
        eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
    else:  # v
        x0 = math.sqrt(a) * x - math.sqrt(1 - a) * out
        eps = math.sqrt(1 - a) * x + math.sqrt(a) * out
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
        eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
    return math.sqrt(a_next) * x0 + math.sqrt(1 - a_next) * eps


@torch.no_grad()
def ddim_sample(
    model: nn.Module,
    cond: torch.Tensor,
    shape: tuple[int, ...],
    alpha_bar: torch.Tensor,
    steps: int = 50,
    guidance: float = 1.0,
    predict: str = "eps",
    clip_x0: float | None = None,
    seed: int = 0,
    progress: bool = False,
    every: int = 0,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Return samples (B, *shape) for the conditions `cond` (B, D): DDIM from pure noise.

    The start noise comes from a CPU generator seeded `seed` (the same samples on one machine,
    whatever the device). With `every` > 0, also return the x0 estimates of every `every`-th
    step (a list, noisiest first): how the picture forms.
    """
    guidance = check_guidance(guidance)
    if predict not in PREDICTIONS:
        raise ValueError(f"predict={predict!r}; choose one of {PREDICTIONS}")
    dev = next(model.parameters()).device
    cond = cond.to(dev, torch.float32)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((len(cond), *shape), generator=gen).to(dev)
    ts = ddim_steps(len(alpha_bar), steps)
    frames = []
    for i, t in enumerate(tqdm(ts, desc="DDIM", disable=not progress, leave=False)):
        a = alpha_bar[t]
        a_next = alpha_bar[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
        out = guided(model, x, torch.full((len(x),), t, device=dev), cond, guidance)
        if every and i % every == 0:
            frames.append(ddim_step(out, x, a, 1.0, predict, clip_x0).cpu())
        x = ddim_step(out, x, a, a_next, predict, clip_x0)
    return (x, frames) if every else x


# ---------------------------------------------------------------------------------------------
# The networks
# ---------------------------------------------------------------------------------------------


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Return sinusoidal embeddings (B, dim) of integer steps t (B,), as a transformer's positions."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _check_cond(cond: torch.Tensor, size: int) -> None:
    if cond.ndim != 2 or cond.shape[1] != size:
        raise ValueError(
            f"the condition must be (B, {size}) (an embedding of this network's CLIP), got "
            f"{tuple(cond.shape)}"
        )


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a skip; the step-and-condition embedding scales and shifts the
    features between them (FiLM, as the improved DDPM's U-Net)."""

    def __init__(self, cin: int, cout: int, emb_dim: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * cout)
        self.norm2, self.conv2 = nn.GroupNorm(8, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class SelfAttention(nn.Module):
    """Multi-head self-attention over the cells of a grid (every cell sees every other)."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(8, channels)
        self.qkv, self.proj = nn.Conv2d(channels, 3 * channels, 1), nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.mT, k.mT, v.mT)  # (B, heads, cells, C / heads)
        return x + self.proj(out.mT.reshape(b, c, h, w))


@dataclass(frozen=True)
class UNetConfig:
    """The decoder's U-Net: `channels` in and out, `width` x each of `mults` per level."""

    channels: int = 32  # the tiny VQGAN's latent channels
    width: int = 48
    mults: tuple[int, ...] = (1, 2)  # 8 x 8 at width 48, then 4 x 4 at 96
    cond_dim: int = 128  # the tiny CLIP's embedding
    heads: int = 4


class UNet(nn.Module):
    """A small U-Net: down a level per `mults` entry, self-attention at the bottom, up again with
    the skips. The step t and the condition (a CLIP embedding) become one embedding that every
    block reads: unCLIP's decoder projects its CLIP embedding and adds it to the step's."""

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = c = config or UNetConfig()
        emb = 4 * c.width
        self.time = nn.Sequential(nn.Linear(c.width, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.cond = nn.Linear(c.cond_dim, emb)
        self.inp = nn.Conv2d(c.channels, c.width, 3, padding=1)
        widths = [c.width * m for m in c.mults]
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        ch = c.width
        for i, w in enumerate(widths):
            self.down.append(ResBlock(ch, w, emb))
            last = i == len(widths) - 1
            self.pool.append(nn.Identity() if last else nn.Conv2d(w, w, 3, stride=2, padding=1))
            ch = w
        self.mid1, self.attn = ResBlock(ch, ch, emb), SelfAttention(ch, c.heads)
        self.mid2 = ResBlock(ch, ch, emb)
        self.up = nn.ModuleList()
        self.unpool = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            last = i == len(widths) - 1
            self.unpool.append(nn.Identity() if last else nn.Upsample(scale_factor=2))
            self.up.append(ResBlock(ch + w, w, emb))
            ch = w
        self.out = nn.Sequential(nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, c.channels, 3, 1, 1))
        nn.init.zeros_(self.out[-1].weight)  # starts by predicting zero: a calm first step
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Return the prediction (B, C, H, W) for noisy x (B, C, H, W) at steps t (B,)."""
        _check_cond(cond, self.config.cond_dim)
        emb = self.time(timestep_embedding(t, self.config.width)) + self.cond(cond)
        h, skips = self.inp(x), []
        for block, pool in zip(self.down, self.pool, strict=True):
            h = block(h, emb)
            skips.append(h)
            h = pool(h)
        h = self.mid2(self.attn(self.mid1(h, emb)), emb)
        for block, unpool in zip(self.up, self.unpool, strict=True):
            h = block(torch.cat([unpool(h), skips.pop()], dim=1), emb)
        return self.out(h)


@dataclass(frozen=True)
class DenoiserConfig:
    """The prior's network: residual MLP blocks of `width` over a vector of `dim`."""

    dim: int = 128  # the tiny CLIP's embedding
    width: int = 256
    depth: int = 4


class VectorDenoiser(nn.Module):
    """Residual MLP blocks over [noisy vector, condition, step]: unCLIP's prior in miniature (the
    paper's is a transformer over the caption's tokens; one text embedding is all this world
    needs). Reads and predicts vectors of `dim`."""

    def __init__(self, config: DenoiserConfig | None = None):
        super().__init__()
        self.config = c = config or DenoiserConfig()
        self.inp = nn.Linear(2 * c.dim, c.width)
        self.time = nn.Sequential(
            nn.Linear(c.width, c.width), nn.SiLU(), nn.Linear(c.width, c.width)
        )
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(c.width),
                nn.Linear(c.width, 2 * c.width),
                nn.SiLU(),
                nn.Linear(2 * c.width, c.width),
            )
            for _ in range(c.depth)
        )
        self.out = nn.Sequential(nn.LayerNorm(c.width), nn.Linear(c.width, c.dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Return the prediction (B, D) for noisy vectors x (B, D) at steps t, given cond (B, D)."""
        _check_cond(cond, self.config.dim)
        h = self.inp(torch.cat([x, cond], dim=-1))
        emb = self.time(timestep_embedding(t, self.config.width))
        for block in self.blocks:
            h = h + block(h + emb)
        return self.out(h)
