"""Notebook 05's fill-in: the loss of one VQGAN+CLIP step (`mmlib.generate.generate`'s step).

The check runs on tiny stand-ins, built offline in milliseconds: `Pixels()` for the VQGAN (its
latent is the picture) and two random convolutional image encoders for the CLIPs, whose
embeddings are shorter than 1, so that an answer which skips the normalisation gives wrong
numbers (that the check can name) rather than NaN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmlib.clip import TensorTransform
from mmlib.exercises.core import Exercise, Mistake
from mmlib.generate import Cutouts, GenerateConfig, clamp_with_grad, total_variation
from mmlib.generate import step_loss as generate_step
from mmlib.prompts import Prompt
from mmlib.vqgan import Pixels

SIZE, CUTN = 8, 4  # a picture of 8 x 8 pixels, 4 cutouts


def step_loss(z, vqgan, models, normalizers, cutouts, generator, targets, smoothness):
    """Return (the picture in [0, 1], its loss) from `mmlib.generate.step_loss`, the step
    `generate` takes, for one picture and one prompt of weight 1 whose embedding by CLIP m is
    targets[m]."""
    config = GenerateConfig(cutn=cutouts.cutn, smoothness=smoothness, init_weight=0.0)
    clips = [(model, None, None) for model in models]
    sets, embedded = [[Prompt("the prompt")]], [[targets]]
    return generate_step(
        z, z, vqgan, clips, normalizers, cutouts, generator, sets, embedded, config
    )


class StandInCLIP(nn.Module):
    """A CLIP stand-in for the check: `encode_image` is one random strided convolution, pooled to
    a 3 x 3 grid (so crops of any size go in) and randomly projected; its weights are drawn from
    `generator` (no global random state is used) and frozen."""

    def __init__(self, generator: torch.Generator, dim: int):
        super().__init__()
        self.conv = nn.Parameter(torch.randn(4, 3, 3, 3, generator=generator) / 6)
        self.proj = nn.Parameter(torch.randn(dim, 36, generator=generator) / 36)
        self.requires_grad_(False)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(F.gelu(F.conv2d(x, self.conv, stride=2)), 3)
        return x.flatten(1) @ self.proj.T


def _inputs(seed: int) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    z = 1.4 * torch.rand(1, 3, SIZE, SIZE, generator=gen) - 0.2  # some pixels outside [0, 1]
    sizes, dims = (SIZE, SIZE - 2), (6, 8)  # two CLIPs, other input sizes and widths
    models = [StandInCLIP(gen, d) for d in dims]
    normalizers = [TensorTransform((s, s), (0.5, 0.4, 0.3), (0.2, 0.3, 0.25), True) for s in sizes]
    targets = [0.3 * torch.randn(d, generator=gen) for d in dims]
    cutouts = Cutouts(cut_size=SIZE, cutn=CUTN, min_frac=0.6)
    crops_gen = torch.Generator().manual_seed(100 + seed)
    return z, Pixels(), models, normalizers, cutouts, crops_gen, targets, 2.0


def _backprop(fn, args) -> tuple:
    """Return the picture, the loss and the gradient the loss sends back to the latent z."""
    z = args[0].requires_grad_(True)
    images, loss = fn(*args)
    loss.backward()
    return images, loss, z.grad


def _variant(
    z,
    vqgan,
    models,
    normalizers,
    cutouts,
    generator,
    targets,
    smoothness,
    *,
    picture="clamp_with_grad",
    normalize_crops=True,
    unit=True,
    sign=1.0,
    over_crops="mean",
    over_clips="sum",
    tv_weight=None,
):
    """One step with one slip (mistakes only; the right answer is mmlib's)."""
    x = vqgan.decode(vqgan.vector_quantize(z))
    x = x if picture == "unmapped" else (x + 1) / 2
    if picture in ("clamp_with_grad", "unmapped"):
        x = clamp_with_grad(x, 0, 1)
    elif picture == "clamp":
        x = x.clamp(0, 1)
    crops = cutouts(x, generator)
    terms = []
    for model, normalize, target in zip(models, normalizers, targets, strict=True):
        a = model.encode_image(normalize(crops) if normalize_crops else crops)
        a, b = (F.normalize(a, dim=-1), F.normalize(target, dim=-1)) if unit else (a, target)
        d = (a - b).norm(dim=-1).div(2).arcsin().pow(2).mul(2)
        terms.append(sign * (d.mean() if over_crops == "mean" else d.sum()))
    loss = sum(terms) / (len(terms) if over_clips == "mean" else 1)
    weight = smoothness if tv_weight is None else tv_weight
    return x, loss + weight * total_variation(x)


def _slip(**slip):
    return lambda *args: _variant(*args, **slip)


STEP_LOSS = Exercise(
    name="step_loss_by_hand",
    where="mmlib.generate.step_loss",
    reference=step_loss,
    inputs=_inputs,
    outputs=_backprop,
    mistakes=[
        Mistake(
            "the distance is subtracted: that maximises it, pushing the picture away from the "
            "prompt; the loss adds it",
            _slip(sign=-1.0),
        ),
        Mistake(
            "the smoothness prior is missing: add smoothness x total_variation(images)",
            _slip(tv_weight=0.0),
        ),
        Mistake(
            "the smoothness prior is not weighted: multiply total_variation(images) by smoothness",
            _slip(tv_weight=1.0),
        ),
        Mistake(
            "the picture is not clamped: clamp it into [0, 1] with clamp_with_grad",
            _slip(picture="unclamped"),
        ),
        Mistake(
            "a plain clamp gives clamped pixels no gradient: clamp_with_grad lets the loss pull "
            "them back in",
            _slip(picture="clamp"),
        ),
        Mistake(
            "the decoder gives [-1, 1]: map it to [0, 1] ((x + 1) / 2) before the clamp",
            _slip(picture="unmapped"),
        ),
        Mistake(
            "the crops reach CLIP without its normalize (resize, mean and std)",
            _slip(normalize_crops=False),
        ),
        Mistake(
            "the embeddings are not normalised: the distance is between directions, so make "
            "both unit vectors first (F.normalize(..., dim=-1))",
            _slip(unit=False),
        ),
        Mistake(
            "the crops' distances are summed: the loss takes their mean over the cutouts",
            _slip(over_crops="sum"),
        ),
        Mistake(
            "the CLIPs' losses are averaged: they add up (the sum over CLIPs m)",
            _slip(over_clips="mean"),
        ),
    ],
)
