"""VQGAN+CLIP: start from a latent grid, decode it with VQGAN, let CLIP score the picture against
the prompts, back-propagate into the latent, repeat.

Each step: snap the latent to the codebook (straight-through), decode, cut the picture into
`cutn` augmented crops (batched tensor ops), embed the crops with every CLIP, and sum the
prompts' spherical distances over crops and models. Adam moves the latent; the latent is kept
inside the codebook's box.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from mmlib.clip import (
    as_clips,
    clip_scores,
    input_size,
    tensor_transform,
)
from mmlib.env import get_device, to_device
from mmlib.images import check_output_paths, write_via_tmp
from mmlib.judge import benchmark_prompt, judge
from mmlib.prompts import Prompt, embed_prompts, parse_prompt, prompt_sets
from mmlib.training import frozen, progress_bar, set_lr
from mmlib.vqgan import from_model_range, to_model_range

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# The pieces of one step
# ---------------------------------------------------------------------------------------------


class _ClampWithGrad(torch.autograd.Function):
    """Clamp in the forward pass; in the backward pass let through the gradient that moves a
    value back into range (so clamped pixels can still be improved)."""

    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.lo, ctx.hi = lo, hi
        ctx.save_for_backward(x)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (grad * (x - x.clamp(ctx.lo, ctx.hi)) >= 0), None, None


def clamp_with_grad(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Return x clamped to [lo, hi], with a gradient that can move clamped values back in."""
    return _ClampWithGrad.apply(x, lo, hi)


def spherical_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Return half the squared great-circle distance between the directions of a and b, row by
    row: for unit vectors at angle theta, |a - b| = 2 sin(theta / 2), so
    2 arcsin(|a - b| / 2)^2 = theta^2 / 2."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    return (a - b).norm(dim=-1).div(2).arcsin().pow(2).mul(2)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Return the mean absolute difference between neighbouring pixels (per picture, summed)."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean(dim=(1, 2, 3))
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean(dim=(1, 2, 3))
    return (dx + dy).sum()


def prompt_loss(
    embeds: torch.Tensor, target: torch.Tensor, weight: float, stop: float
) -> torch.Tensor:
    """Return one prompt's loss over crop embeddings: |weight| x mean distance (pushed up when the
    weight is negative); below `stop` the distance still shows but no longer pulls."""
    d = spherical_distance(embeds, target[None]) * math.copysign(1.0, weight)
    pulled = torch.maximum(d, torch.full_like(d, stop))
    d = d.detach() + (pulled - pulled.detach())  # forward: d; gradient: that of max(d, stop)
    return abs(weight) * d.mean()


@dataclass
class Cutouts:
    """Random crops of random size, flips, small affine warps and noise, for a whole batch at
    once: one roi_align for every crop, one grid_sample for every warp."""

    cut_size: int
    cutn: int = 16
    min_frac: float = 0.6  # smallest crop side, as a fraction of the image side
    flip: bool = True
    affine: float = 0.08  # size of the random rotation/shear/scale
    noise: float = 0.03

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return (B * cutn, 3, cut_size, cut_size) crops of images (B, 3, H, W)."""
        b, _, h, w = images.shape
        n = b * self.cutn
        side = min(h, w) * (
            self.min_frac + (1 - self.min_frac) * torch.rand(n, generator=generator)
        )
        x0 = torch.rand(n, generator=generator) * (w - side)
        y0 = torch.rand(n, generator=generator) * (h - side)
        which = torch.arange(b).repeat_interleave(self.cutn).float()
        boxes = torch.stack([which, x0, y0, x0 + side, y0 + side], dim=1).to(images)
        crops = roi_align(images, boxes, output_size=self.cut_size, aligned=True)
        if self.flip:
            mask = (torch.rand(n, generator=generator) < 0.5).to(images.device)
            crops = torch.where(mask[:, None, None, None], crops.flip(-1), crops)
        if self.affine > 0:
            theta = torch.eye(2, 3).repeat(n, 1, 1)
            theta[:, :, :2] += self.affine * (2 * torch.rand(n, 2, 2, generator=generator) - 1)
            grid = F.affine_grid(theta.to(images), list(crops.shape), align_corners=False)
            crops = F.grid_sample(crops, grid, padding_mode="border", align_corners=False)
        if self.noise > 0:
            crops = crops + self.noise * torch.randn(crops.shape, generator=generator).to(images)
        return crops


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


@dataclass
class GenerateConfig:
    """Everything that decides a generation (saved in the PNG's metadata)."""

    steps: int = 150
    lr: float = 0.2
    lr_drop_at: float = 0.8  # fraction of the steps after which the learning rate drops ...
    lr_drop: float = 0.1  # ... by this factor
    size: int = 32  # picture side in pixels (rounded to the VQGAN's factor)
    cutn: int = 16
    cut_min: float = 0.85  # tiny CLIPs saw whole 32 px pictures: crops stay large
    augment: bool = True
    affine: float = 0.08  # size of the random rotation/shear/scale of each crop
    noise: float = 0.03  # standard deviation of the noise added to each crop
    init: str = "tokens"  # "tokens" (random codebook entries), "noise", or "image"
    init_weight: float = 0.0  # pull towards the init latent (with an init image)
    smoothness: float = 2.0  # weight of a total-variation prior: flat regions, crisp edges
    seed: int = 0
    frames_every: int = 0  # keep a frame every N steps for a GIF/MP4 (0: none)

    def __post_init__(self):
        whole = {"steps": 1, "size": 1, "cutn": 1, "seed": 0, "frames_every": 0}
        for name, least in whole.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number above 0, got {self.lr!r}")
        fractions = {"lr_drop_at": self.lr_drop_at, "lr_drop": self.lr_drop}
        fractions["cut_min"] = self.cut_min
        for name, value in fractions.items():
            if not (math.isfinite(value) and 0 < value <= 1):
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")
        for name in ("affine", "noise", "init_weight", "smoothness"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.init not in ("tokens", "noise", "image"):
            raise ValueError(f"init={self.init!r}; choose 'tokens', 'noise' or 'image'")


@dataclass
class Generation:
    """What `generate` returns: pictures in [0, 1] (B, 3, H, W), the loss history, frames."""

    images: torch.Tensor
    prompts: list[list[Prompt]]
    config: GenerateConfig
    losses: list[float] = field(default_factory=list)
    frames: list[torch.Tensor] = field(default_factory=list)
    stopped: str | None = None


def round_size(size: int, factor: int) -> int:
    """Return `size` rounded to a multiple of the VQGAN's factor (at least one token)."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    return max(factor, int(round(size / factor)) * factor)


def generate(
    prompts,
    vqgan,
    clips: Sequence,
    config: GenerateConfig | None = None,
    init_image: torch.Tensor | None = None,
    device=None,
    progress: bool = True,
    callback: Callable[[int, torch.Tensor, float], bool | None] | None = None,
    cutouts: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> Generation:
    """Return pictures that the CLIP model(s) match to the prompts.

    `prompts`: one prompt per picture ("a red star", "text:weight:stop" or a Prompt), or a list
    of prompts per picture; several pictures are optimised as one batch. `clips`: one or more
    (model, preprocess, tokenizer); their losses are summed. `callback(step, images, loss)` runs
    every step (return True to stop). `cutouts(images, generator)` replaces the config's
    cutouts: it must return `config.cutn` crops per picture, (B * cutn, 3, s, s), picture-major
    (notebook 05's exercise plugs in its own augmentation). The same seed gives the same
    pictures on the same device, torch version and thread count.
    """
    config = config or GenerateConfig()
    sets = prompt_sets(prompts)
    dev = get_device(device)  # one device for the whole call: the models are moved to it
    clips = [(to_device(m, dev, "CLIP"), pre, tok) for m, pre, tok in as_clips(clips)]
    size = round_size(config.size, vqgan.factor)
    if size != config.size:
        log.warning(
            "size %d is not a multiple of the VQGAN's factor %d: using %d",
            config.size,
            vqgan.factor,
            size,
        )
    gen = torch.Generator().manual_seed(config.seed)
    vqgan = to_device(vqgan, dev, "VQGAN").eval()
    # only the latent learns: no gradient is spent on the VQGAN's or the CLIPs' weights
    with frozen(vqgan, *(model for model, _, _ in clips)):
        targets = embed_prompts(sets, clips, dev)
        b = len(sets)
        lo, hi = (t.to(dev) for t in vqgan.codebook_box())
        z0 = initial_latent(vqgan, config, b, size, init_image, gen, dev)
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=config.lr)
        if cutouts is None:
            cutouts = default_cutouts(config, clips[0][0])
        normalizers = [tensor_transform(model) for model, _, _ in clips]
        result = Generation(
            from_model_range(vqgan.decode(vqgan.vector_quantize(z0))).detach().cpu(), sets, config
        )
        bar = progress_bar(0, config.steps, "generate", progress)
        for step in bar:
            if step == int(config.lr_drop_at * config.steps):
                set_lr(opt, config.lr * config.lr_drop)
            images, loss = step_loss(
                z, z0, vqgan, clips, normalizers, cutouts, gen, sets, targets, config
            )
            if not torch.isfinite(loss):
                result.stopped = (
                    f"the loss became {loss.item()} at step {step}; kept the last good image"
                )
                break
            result.images = images.detach().cpu()
            result.losses.append(loss.item())
            if config.frames_every and step % config.frames_every == 0:
                result.frames.append(result.images.clone())
            if callback is not None and callback(step, result.images, loss.item()):
                result.stopped = f"stopped by the callback at step {step}"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                z.copy_(torch.maximum(torch.minimum(z, hi), lo))  # stay inside the codebook's box
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        if result.stopped is None:
            with torch.no_grad():
                result.images = from_model_range(vqgan.decode(vqgan.vector_quantize(z))).cpu()
    return result


def initial_latent(vqgan, config: GenerateConfig, b: int, size: int, init_image, gen, dev):
    """Return the latent (b, C, size / factor, size / factor) the walk starts from: the VQGAN's
    encoding of `init_image`, uniform noise in the codebook's box, or random codebook entries."""
    grid = size // vqgan.factor
    lo, hi = (t.to(dev) for t in vqgan.codebook_box())
    if config.init == "image" or init_image is not None:
        if not isinstance(init_image, torch.Tensor) or init_image.ndim != 3:
            raise ValueError("init='image' needs init_image, a (3, H, W) tensor in [0, 1]")
        img = F.interpolate(
            init_image[None].float(),
            size=(size, size),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        ).expand(b, -1, -1, -1)
        with torch.no_grad():
            z0 = vqgan.encode_latent(to_model_range(img.to(dev)))
    elif config.init == "noise":
        z0 = lo + (hi - lo) * torch.rand(b, vqgan.embed_dim, grid, grid, generator=gen).to(dev)
    elif config.init == "tokens":
        idx = torch.randint(0, vqgan.n_embed, (b, grid, grid), generator=gen).to(dev)
        z0 = vqgan.quantize.lookup(idx)
    else:
        raise ValueError(f"init={config.init!r}; choose 'tokens', 'noise' or 'image'")
    return z0


def step_loss(z, z0, vqgan, clips, normalizers, cutouts, gen, sets, targets, config):
    """Return (the pictures in [0, 1], the loss) of one step from the latent z: decode the
    snapped latent, clamp with gradient, cut out, and add up `clip_loss`, the pull towards the
    start z0 (`config.init_weight`) and the smoothness prior (`config.smoothness`)."""
    images = clamp_with_grad(from_model_range_raw(vqgan.decode(vqgan.vector_quantize(z))), 0, 1)
    crops = cutouts(images, gen)
    b = len(sets)
    if crops.shape[0] != b * config.cutn:
        raise ValueError(
            f"cutouts gave {crops.shape[0]} crops for {b} picture(s); want config.cutn = "
            f"{config.cutn} per picture, {b * config.cutn} in all"
        )
    loss = clip_loss(clips, normalizers, crops, sets, targets)
    if config.init_weight:
        loss = loss + config.init_weight * F.mse_loss(z, z0)
    if config.smoothness:
        loss = loss + config.smoothness * total_variation(images)
    return images, loss


def clip_loss(clips, normalizers, crops: torch.Tensor, sets, targets) -> torch.Tensor:
    """Return the prompts' loss summed over CLIPs: each CLIP embeds every crop, and each prompt
    of a picture adds its `prompt_loss` over that picture's crops (crops are picture-major)."""
    b = len(sets)
    loss = crops.new_zeros(())
    for m, ((model, _, _), normalize) in enumerate(zip(clips, normalizers, strict=True)):
        embeds = model.encode_image(normalize(crops)).view(b, len(crops) // b, -1)
        for i, prompts_i in enumerate(sets):
            for p, target in zip(prompts_i, targets[i], strict=True):
                loss = loss + prompt_loss(embeds[i], target[m], p.weight, p.stop)
    return loss


def default_cutouts(config: GenerateConfig, model: torch.nn.Module) -> Cutouts:
    """Return the Cutouts `generate` makes when it is given none: `config.cutn` crops per picture
    at the input size of CLIP `model` (the first CLIP), the augmentations `config.augment` allows.

    For writing the loop out by hand (notebook 05) or building one's own cutouts on top of it.
    """
    augment = (
        {"affine": config.affine, "noise": config.noise}
        if config.augment
        else {"flip": False, "affine": 0.0, "noise": 0.0}
    )
    return Cutouts(input_size(model)[0], config.cutn, config.cut_min, **augment)


def from_model_range_raw(images: torch.Tensor) -> torch.Tensor:
    """Map VQGAN output to [0, 1] without clamping (the clamp with gradient comes after)."""
    return (images + 1) / 2


def save_png(image: torch.Tensor, path: str | Path, prompts, config: GenerateConfig) -> Path:
    """Write one picture (3, H, W) in [0, 1] as a PNG whose metadata holds every prompt (text or
    image, weight, stop) and every setting, so the picture can be made again."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    check_output_paths(path)
    arr = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype("uint8")
    prompts = [parse_prompt(p) for p in prompts]
    meta = PngInfo()
    meta.add_text("prompt", " | ".join(p.spec() for p in prompts))
    meta.add_text("seed", str(config.seed))
    meta.add_text("mmlib_settings", json.dumps(asdict(config)))
    meta.add_text(
        "mmlib_prompts",
        json.dumps(
            [
                {"text": p.text, "image": p.source, "weight": p.weight, "stop": p.stop}
                for p in prompts
            ]
        ),
    )
    return write_via_tmp(
        Path(path), lambda tmp: Image.fromarray(arr).save(tmp, format="PNG", pnginfo=meta)
    )


def run_benchmark(
    vqgan,
    clips: Sequence,
    judges,
    pairs: Sequence[tuple[str, str]],
    config: GenerateConfig | None = None,
    best_of: int = 1,
    progress: bool = True,
    device=None,
) -> dict:
    """Generate pictures for (shape, colour) pairs as one batch and judge them twice.

    With `best_of` > 1 every prompt is generated that many times (other random starts, same
    batch) and the generator's own CLIPs keep the one they score highest, as DALL-E re-ranks
    its samples; the judges never take part in the choice. Returns {"pairs", "prompts",
    "images" (B, 3, H, W), "seconds", "samples_per_s" (kept pictures per second), "config",
    "best_of", and per judge ("judge_clip", "classifier"): predictions, correct, fraction}.
    """
    if not pairs:
        raise ValueError("pairs is empty")
    if best_of < 1:
        raise ValueError(f"best_of must be >= 1, got {best_of}")
    config = config or GenerateConfig()
    prompts = [benchmark_prompt(shape, colour) for shape, colour in pairs]
    tick = time.perf_counter()
    result = generate(prompts * best_of, vqgan, clips, config, progress=progress, device=device)
    images = result.images.view(best_of, len(prompts), *result.images.shape[1:])
    if best_of > 1:
        scores = clip_scores(result.images, prompts * best_of, clips).view(best_of, len(prompts))
        images = images[scores.argmax(dim=0), torch.arange(len(prompts))]
    else:
        images = images[0]
    seconds = time.perf_counter() - tick
    verdicts = judge(images, list(pairs), *judges)
    return {
        "pairs": [list(p) for p in pairs],
        "prompts": prompts,
        "images": images,
        "seconds": seconds,
        "samples_per_s": len(pairs) / seconds,
        "config": asdict(config),
        "best_of": best_of,
        **verdicts,
    }
