"""VQGAN+CLIP: start from a latent grid, decode it with VQGAN, let CLIP score the picture against
the prompts, back-propagate into the latent, repeat.

Each step: snap the latent to the codebook (straight-through), decode, cut the picture into
`cutn` augmented crops (batched tensor ops), embed the crops with every CLIP, and sum the
prompts' spherical distances over crops and models. Adam moves the latent; the latent is kept
inside the codebook's box.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from mmlib.clip import input_size, tensor_transform
from mmlib.env import MMLibError
from mmlib.vqgan import from_model_range, to_model_range

_NUMBERISH = re.compile(r"\s*([-+]?inf|[-+0-9.eE]*[0-9][-+0-9.eE]*)\s*")


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
    text = ":".join(pieces).strip()
    if not text:
        raise ValueError(f"prompt {spec!r} has a weight but no text")
    weight = numbers[0] if numbers else 1.0
    stop = numbers[1] if len(numbers) > 1 else float("-inf")
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
    """Return the squared great-circle distance between unit vectors (times 2), row by row."""
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

    steps: int = 300
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
    from mmlib.images import load_image

    parsed = parse_prompt(spec)
    return Prompt(image=load_image(parsed.text), weight=parsed.weight, stop=parsed.stop)


def _embed_prompts(sets, clips, device) -> list[list[list[torch.Tensor]]]:
    from mmlib.clip import encode_images, encode_texts

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
) -> Generation:
    """Return pictures that the CLIP model(s) match to the prompts.

    `prompts`: one prompt per picture ("a red star", "text:weight:stop" or a Prompt), or a list
    of prompts per picture; several pictures are optimised as one batch. `clips`: one or more
    (model, preprocess, tokenizer); their losses are summed. `callback(step, images, loss)` runs
    every step (return True to stop). The same seed gives the same pictures on the same device,
    torch version and thread count.
    """
    import logging

    from mmlib.env import get_device
    from mmlib.training import progress_bar

    config = config or GenerateConfig()
    sets = _as_prompt_sets(prompts)
    clips = as_clips(clips)
    dev = get_device(device)
    size = round_size(config.size, vqgan.factor)
    if size != config.size:
        logging.getLogger(__name__).warning(
            "size %d is not a multiple of the VQGAN's factor %d: using %d",
            config.size,
            vqgan.factor,
            size,
        )
    gen = torch.Generator().manual_seed(config.seed)
    vqgan = vqgan.to(dev).eval()
    for p in vqgan.parameters():
        p.requires_grad_(False)
    targets = _embed_prompts(sets, clips, dev)
    b, grid = len(sets), size // vqgan.factor
    lo, hi = (t.to(dev) for t in vqgan.codebook_box())
    if config.init == "image" or init_image is not None:
        if init_image is None:
            raise ValueError("init='image' needs init_image (a (3, H, W) tensor in [0, 1])")
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
    augment = (
        {"affine": config.affine, "noise": config.noise}
        if config.augment
        else {"flip": False, "affine": 0.0, "noise": 0.0}
    )
    cutouts = Cutouts(input_size(clips[0][0])[0], config.cutn, config.cut_min, **augment)
    normalizers = [tensor_transform(model) for model, _, _ in clips]
    result = Generation(
        from_model_range(vqgan.decode(vqgan.vector_quantize(z0))).detach().cpu(), sets, config
    )
    bar = progress_bar(0, config.steps, "generate", progress)
    for step in bar:
        if step == int(config.lr_drop_at * config.steps):
            for group in opt.param_groups:
                group["lr"] = config.lr * config.lr_drop
        images = clamp_with_grad(from_model_range_raw(vqgan.decode(vqgan.vector_quantize(z))), 0, 1)
        crops = cutouts(images, gen)
        loss = images.new_zeros(())
        for (model, _, _), normalize, m in zip(clips, normalizers, range(len(clips)), strict=True):
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


def from_model_range_raw(images: torch.Tensor) -> torch.Tensor:
    """Map VQGAN output to [0, 1] without clamping (the clamp with gradient comes after)."""
    return (images + 1) / 2


def save_png(image: torch.Tensor, path: str | Path, prompts, config: GenerateConfig) -> Path:
    """Write one picture (3, H, W) in [0, 1] as a PNG whose metadata holds prompts and settings."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    arr = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype("uint8")
    meta = PngInfo()
    texts = [p.text if isinstance(p, Prompt) else str(p) for p in prompts]
    meta.add_text("prompt", " | ".join(t for t in texts if t))
    meta.add_text("seed", str(config.seed))
    meta.add_text("mmlib_settings", json.dumps(asdict(config)))
    path = Path(path)
    Image.fromarray(arr).save(path, pnginfo=meta)
    return path


def save_video(
    frames: Sequence[torch.Tensor], path: str | Path, fps: int = 10, scale: int = 4
) -> Path:
    """Write frames (each (3, H, W) in [0, 1]) as a GIF or MP4 (by suffix), enlarged `scale` times."""
    import imageio.v3 as iio
    import numpy as np

    if not frames:
        raise ValueError("no frames: generate with frames_every > 0")
    arrs = [
        (
            F.interpolate(f[None], scale_factor=scale, mode="nearest")[0]
            .clamp(0, 1)
            .permute(1, 2, 0)
            .numpy()
            * 255
        ).astype(np.uint8)
        for f in frames
    ]
    path = Path(path)
    if path.suffix.lower() == ".gif":
        iio.imwrite(path, np.stack(arrs), duration=1000 / fps, loop=0)
    else:  # MP4 and friends through imageio-ffmpeg
        iio.imwrite(path, np.stack(arrs), fps=fps)
    return path


def reference_step_cutouts(
    images: torch.Tensor, cut_size: int, cutn: int, cut_min: float, generator: torch.Generator
) -> torch.Tensor:
    """The original VQGAN+CLIP notebook's way, for `mmlib bench generate`: a Python loop over
    cuts, each cropped by slicing, pooled to size and augmented on its own."""
    _, _, h, w = images.shape
    side_max = min(h, w)
    cuts = []
    for _ in range(cutn):
        side = int(side_max * (cut_min + (1 - cut_min) * torch.rand(1, generator=generator).item()))
        x0 = int(torch.randint(0, w - side + 1, (1,), generator=generator))
        y0 = int(torch.randint(0, h - side + 1, (1,), generator=generator))
        cut = F.adaptive_avg_pool2d(images[:, :, y0 : y0 + side, x0 : x0 + side], cut_size)
        if torch.rand(1, generator=generator).item() < 0.5:
            cut = cut.flip(-1)
        theta = torch.eye(2, 3)[None].clone()
        theta[:, :, :2] += 0.08 * (2 * torch.rand(1, 2, 2, generator=generator) - 1)
        theta = theta.to(images)
        grid = F.affine_grid(theta.expand(len(cut), -1, -1), list(cut.shape), align_corners=False)
        cut = F.grid_sample(cut, grid, padding_mode="border", align_corners=False)
        cuts.append(cut + 0.03 * torch.randn(cut.shape, generator=generator).to(images))
    return torch.cat(cuts)


def reference_generate(
    prompt: str,
    vqgan,
    clip,
    steps: int,
    cutn: int,
    lr: float = 0.2,
    seed: int = 0,
    size: int = 32,
    device="cpu",
) -> torch.Tensor:
    """A straightforward loop in the style of the original VQGAN+CLIP notebook (one picture,
    per-cut Python loop); the baseline of `mmlib bench generate`."""
    model, _, tokenizer = clip
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        target = F.normalize(model.encode_text(tokenizer([prompt]).to(device)), dim=-1)
    grid = size // vqgan.factor
    idx = torch.randint(0, vqgan.n_embed, (1, grid, grid), generator=gen).to(device)
    z = vqgan.quantize.lookup(idx).clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    normalize, size = tensor_transform(model), input_size(model)[0]
    lo, hi = (t.to(device) for t in vqgan.codebook_box())
    for _ in range(steps):
        images = clamp_with_grad(from_model_range_raw(vqgan.decode(vqgan.vector_quantize(z))), 0, 1)
        cuts = reference_step_cutouts(images, size, cutn, 0.6, gen)
        embeds = F.normalize(model.encode_image(normalize(cuts)), dim=-1)
        loss = spherical_distance(embeds, target).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            z.copy_(torch.maximum(torch.minimum(z, hi), lo))
    return images.detach()


def profile_settings(profile: str | None = None) -> dict:
    """Return the GenerateConfig fields of a profile.

    tiny: 32 px, cutn 16, the defaults (tuned on the 20 benchmark prompts, notebook 05).
    full: 256 px, cutn 32, crops from half the picture up, no smoothness prior (the settings of
    the original VQGAN+CLIP notebooks; untuned here: no real weights on this machine).
    """
    from mmlib.env import get_profile

    if get_profile(profile) == "full":
        return {"size": 256, "cutn": 32, "cut_min": 0.5, "smoothness": 0.0}
    return {"size": 32, "cutn": 16}


def as_clips(clips) -> list[tuple]:
    """Return one CLIP (model, preprocess, tokenizer) or a sequence of them as a list of triples."""
    first = next(iter(clips), None)
    if first is None:
        raise ValueError("clips is empty: give at least one CLIP (model, preprocess, tokenizer)")
    single = hasattr(clips, "model") or isinstance(first, torch.nn.Module)
    return [tuple(clips)] if single else [tuple(c) for c in clips]


def clip_scores(images: torch.Tensor, prompts: Sequence[str], clips: Sequence) -> torch.Tensor:
    """Return each picture's cosine similarity to its own prompt, summed over the CLIPs."""
    from mmlib.clip import encode_images, encode_texts

    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} pictures for {len(prompts)} prompts")
    total = torch.zeros(len(images))
    for model, _, tokenizer in clips:
        feats = encode_images(model, None, images, progress=False).float().cpu()
        texts = encode_texts(model, tokenizer, list(prompts), progress=False).float().cpu()
        total += (feats * texts).sum(dim=-1)
    return total


def run_benchmark(
    vqgan,
    clips: Sequence,
    judges,
    pairs: Sequence[tuple[str, str]],
    config: GenerateConfig | None = None,
    best_of: int = 1,
    progress: bool = True,
) -> dict:
    """Generate pictures for (shape, colour) pairs as one batch and judge them twice.

    With `best_of` > 1 every prompt is generated that many times (other random starts, same
    batch) and the generator's own CLIPs keep the one they score highest, as DALL-E re-ranks
    its samples; the judges never take part in the choice. Returns {"pairs", "prompts",
    "images" (B, 3, H, W), "seconds", "samples_per_s" (kept pictures per second), "config",
    "best_of", and per judge ("judge_clip", "classifier"): predictions, correct, fraction}.
    """
    import time

    from mmlib.judge import benchmark_prompt, judge

    if not pairs:
        raise ValueError("pairs is empty")
    if best_of < 1:
        raise ValueError(f"best_of must be >= 1, got {best_of}")
    config = config or GenerateConfig()
    prompts = [benchmark_prompt(shape, colour) for shape, colour in pairs]
    tick = time.perf_counter()
    result = generate(prompts * best_of, vqgan, clips, config, progress=progress)
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


def generate_command(args) -> int:
    """`mmlib generate`: one picture from prompts, saved as PNG (with its settings) and video."""
    from mmlib import zoo
    from mmlib.images import load_image

    settings = profile_settings(args.profile)
    config = GenerateConfig(
        **{
            **settings,
            "steps": args.steps,
            "seed": args.seed,
            "lr": args.lr,
            "size": args.size or settings["size"],
            "cutn": args.cutn or settings["cutn"],
            "init": "image" if args.init_image else "tokens",
            "init_weight": args.init_weight,
            "frames_every": max(1, args.steps // 50) if args.video else 0,
        }
    )
    init = None
    if args.init_image:
        import numpy as np

        init = torch.from_numpy(np.asarray(load_image(args.init_image))).permute(2, 0, 1) / 255.0
    # clear errors before loading models
    prompts = [parse_prompt(p) for p in args.prompts] + [image_prompt(p) for p in args.image_prompt]
    result = generate(
        [prompts],
        zoo.get_vqgan(args.profile),
        zoo.get_generation_clips(args.profile),
        config,
        init_image=init,
    )
    if result.stopped:
        print(result.stopped)
    print(f"picture: {save_png(result.images[0], args.out, prompts, config)}")
    if args.video:
        print(f"video: {save_video([f[0] for f in result.frames], args.video)}")
    return 0 if result.stopped is None else 1
