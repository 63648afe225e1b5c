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
import os
import re
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
    encode_images,
    encode_texts,
    input_size,
    tensor_transform,
)
from mmlib.env import MMLibError, get_device, to_device
from mmlib.images import load_image
from mmlib.judge import benchmark_prompt, judge
from mmlib.training import frozen, progress_bar, set_lr
from mmlib.vqgan import from_model_range, to_model_range

log = logging.getLogger(__name__)

_NUMBERISH = re.compile(r"\s*([-+]?(inf|infinity|nan)|[-+0-9.eE]*[0-9][-+0-9.eE]*)\s*", re.I)
VIDEO_SUFFIXES = (".gif", ".mp4", ".webm", ".mov", ".mkv", ".avi")


class GenerationStopped(MMLibError):
    """The optimisation stopped (NaN/inf, or asked to); the last good image is kept."""


@dataclass
class Prompt:
    """One prompt: a text or an image, with a weight (negative steers away) and a stop distance
    below which it stops pulling."""

    text: str | None = None
    image: object = None
    weight: float = 1.0
    stop: float = float("-inf")
    source: str | None = None  # where an image prompt came from (a path), for the PNG metadata

    def spec(self) -> str:
        """Return the prompt as `text:weight:stop` (an image as `[image path]:weight:stop`)."""
        what = self.text if self.text is not None else f"[image {self.source or '(in memory)'}]"
        stop = "" if self.stop == float("-inf") else f":{self.stop:g}"
        return f"{what}:{self.weight:g}{stop}"


def parse_prompt(spec: str | Prompt) -> Prompt:
    """Return the Prompt of "text:weight:stop" (weight and stop optional).

    Only trailing parts that look like numbers are read as weight and stop, so colons inside
    the text ("a poster: a red star") are kept; a trailing part like "1.2.3" is an error.
    """
    if isinstance(spec, Prompt):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a prompt must be a non-empty string, got {spec!r}")
    pieces, numbers = spec.split(":"), []
    while len(pieces) > 1 and len(numbers) < 2 and _NUMBERISH.fullmatch(pieces[-1]):
        raw = pieces.pop()
        try:
            numbers.insert(0, float(raw))
        except ValueError:
            raise ValueError(
                f"{raw.strip()!r} in prompt {spec!r} is not a number "
                f"(the form is 'text:weight:stop')"
            ) from None
    if len(pieces) > 1 and _NUMBERISH.fullmatch(pieces[-1]):
        raise ValueError(
            f"prompt {spec!r} ends in more than two numbers; the form is 'text:weight:stop'"
        )
    text = ":".join(pieces).strip()
    if not text:
        raise ValueError(f"prompt {spec!r} has a weight but no text")
    weight = numbers[0] if numbers else 1.0
    stop = numbers[1] if len(numbers) > 1 else float("-inf")
    if not math.isfinite(weight) or weight == 0:
        raise ValueError(
            f"the weight in prompt {spec!r} is {weight}; give a finite number other than 0 "
            f"(negative steers away)"
        )
    if math.isnan(stop) or stop == float("inf"):
        raise ValueError(f"the stop in prompt {spec!r} is {stop}; give a finite number")
    return Prompt(text=text, weight=weight, stop=stop)


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


def _as_prompt_sets(prompts) -> list[list[Prompt]]:
    if isinstance(prompts, (str, Prompt)):
        prompts = [prompts]
    if not prompts:
        raise ValueError("prompts is empty: give at least one prompt")
    sets = [
        [parse_prompt(p)] if isinstance(p, (str, Prompt)) else [parse_prompt(q) for q in p]
        for p in prompts
    ]
    if any(not s for s in sets):
        raise ValueError("every picture needs at least one prompt")
    return sets


def image_prompt(spec: str) -> Prompt:
    """Return the image Prompt of "path" or "path:weight:stop", the picture loaded and checked
    now (a missing file or one that is not an image fails here, before any model work)."""
    parsed = parse_prompt(spec)
    image = load_image(parsed.text)
    return Prompt(image=image, weight=parsed.weight, stop=parsed.stop, source=parsed.text)


def _embed_prompts(sets, clips, device) -> list[list[list[torch.Tensor]]]:
    out = []
    for prompts in sets:
        per_prompt = []
        for p in prompts:
            per_model = []
            for model, preprocess, tokenizer in clips:
                if p.text is not None:
                    per_model.append(
                        encode_texts(model, tokenizer, [p.text], device=device, progress=False)[
                            0
                        ].to(device)
                    )
                elif p.image is not None:
                    per_model.append(
                        encode_images(model, preprocess, [p.image], device=device, progress=False)[
                            0
                        ].to(device)
                    )
                else:
                    raise ValueError("a Prompt needs a text or an image")
            per_prompt.append(per_model)
        out.append(per_prompt)
    return out


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
    sets = _as_prompt_sets(prompts)
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
        targets = _embed_prompts(sets, clips, dev)
        b, grid = len(sets), size // vqgan.factor
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
            images = clamp_with_grad(
                from_model_range_raw(vqgan.decode(vqgan.vector_quantize(z))), 0, 1
            )
            crops = cutouts(images, gen)
            if crops.shape[0] != b * config.cutn:
                raise ValueError(
                    f"cutouts gave {crops.shape[0]} crops for {b} picture(s); want config.cutn = "
                    f"{config.cutn} per picture, {b * config.cutn} in all"
                )
            loss = images.new_zeros(())
            for (model, _, _), normalize, m in zip(
                clips, normalizers, range(len(clips)), strict=True
            ):
                embeds = model.encode_image(normalize(crops)).view(b, config.cutn, -1)
                for i, prompts_i in enumerate(sets):
                    for p, target in zip(prompts_i, targets[i], strict=True):
                        loss = loss + prompt_loss(embeds[i], target[m], p.weight, p.stop)
            if config.init_weight:
                loss = loss + config.init_weight * F.mse_loss(z, z0)
            if config.smoothness:
                loss = loss + config.smoothness * total_variation(images)
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


def check_output_paths(png: str | os.PathLike, video: str | os.PathLike | None = None) -> None:
    """Raise a ValueError or FileNotFoundError now, before any model work, when the picture or
    the video cannot be written where asked: a missing or read-only folder, a picture not named
    .png, a video suffix that is neither GIF nor a video format imageio-ffmpeg writes."""
    targets = [(Path(png), (".png",), "picture")]
    if video is not None:
        targets.append((Path(video), VIDEO_SUFFIXES, "video"))
    for path, suffixes, what in targets:
        if path.suffix.lower() not in suffixes:
            raise ValueError(f"the {what} {str(path)!r} must end in one of {list(suffixes)}")
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            raise FileNotFoundError(
                f"the folder of the {what} {str(path)!r} does not exist; create it first"
            )
        if not os.access(folder, os.W_OK):
            raise PermissionError(f"cannot write the {what} into {str(folder)!r} (not writable)")
        if path.is_dir():
            raise ValueError(f"the {what} {str(path)!r} is a folder; give a file name")


def _write_via_tmp(path: Path, write) -> Path:
    """Call write(tmp) on a temporary file beside `path`, then rename it: no half-written file."""
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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
    return _write_via_tmp(
        Path(path), lambda tmp: Image.fromarray(arr).save(tmp, format="PNG", pnginfo=meta)
    )


def save_video(
    frames: Sequence[torch.Tensor], path: str | Path, fps: int = 10, scale: int = 4
) -> Path:
    """Write frames (each (3, H, W) in [0, 1]) as a GIF or MP4 (by suffix), enlarged `scale` times."""
    import imageio.v3 as iio
    import numpy as np

    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"the video {str(path)!r} must end in one of {list(VIDEO_SUFFIXES)}")
    if not frames:
        raise ValueError("no frames: generate with frames_every > 0")
    arrs = np.stack(
        [
            (
                F.interpolate(f[None], scale_factor=scale, mode="nearest")[0]
                .clamp(0, 1)
                .permute(1, 2, 0)
                .numpy()
                * 255
            ).astype(np.uint8)
            for f in frames
        ]
    )
    if path.suffix.lower() == ".gif":
        return _write_via_tmp(path, lambda tmp: iio.imwrite(tmp, arrs, duration=1000 / fps, loop=0))
    return _write_via_tmp(path, lambda tmp: iio.imwrite(tmp, arrs, fps=fps))


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


class Pixels(torch.nn.Module):
    """A stand-in for the VQGAN in `generate` that generates nothing: the latent *is* the picture,
    (B, 3, size, size) in [0, 1], with no codebook and no decoder (`factor` 1, the box [0, 1]).

    `generate(prompts, Pixels(), clips, GenerateConfig(init="noise", ...))` then runs the same
    loop, cutouts, losses, steps and learning rates on raw pixels: what CLIP alone asks for when
    it may set every pixel (notebook 05's control experiment). `init="image"` starts from a
    picture; `init="tokens"` has no codebook to draw from and is refused.
    """

    factor = 1
    embed_dim = 3

    @property
    def n_embed(self) -> int:
        raise ValueError("Pixels has no codebook to draw tokens from: use init='noise' or 'image'")

    def codebook_box(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the box the latent stays in: [0, 1] for every colour channel."""
        return torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)

    def vector_quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Return z unchanged: there is no codebook to snap to."""
        return z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Return the picture z (in [0, 1]) in the [-1, 1] range a VQGAN's decoder gives."""
        return to_model_range(z)

    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        """Return the latent of images in [-1, 1]: the pictures themselves, in [0, 1]."""
        return (images + 1) / 2
