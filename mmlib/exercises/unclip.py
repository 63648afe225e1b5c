"""Notebook 07's fill-ins: the diffusion training step (`mmlib.diffusion.diffusion_loss`) and one
DDIM step (`mmlib.diffusion.ddim_step`), both for a network that predicts v, as the course's
decoder does."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from mmlib.diffusion import (
    DenoiserConfig,
    VectorDenoiser,
    cosine_schedule,
    ddim_step,
    diffusion_loss,
)
from mmlib.exercises.core import Exercise, Mistake

# ---------------------------------------------------------------------------------------------
# The training step
# ---------------------------------------------------------------------------------------------

SCHEDULE = cosine_schedule(20)  # few steps: every row's t differs a lot


def _batch(seed: int) -> tuple:
    """A tiny random denoiser, a batch, the schedule, a seeded generator and p_uncond; a high
    p_uncond so that some conditions are dropped in every batch."""
    with torch.random.fork_rng(devices=[]):  # the notebook's own random numbers stay as they were
        torch.manual_seed(seed)
        net = VectorDenoiser(DenoiserConfig(dim=8, width=16, depth=1))
    gen = torch.Generator().manual_seed(seed)
    x0, cond = torch.randn(8, 8, generator=gen), torch.randn(8, 8, generator=gen)
    return net, x0, cond, SCHEDULE, torch.Generator().manual_seed(100 + seed), 0.3


def diffusion_loss_v(net, x0, cond, alpha_bar, gen, p_uncond=0.1):
    """mmlib's training loss for a network that predicts v."""
    return diffusion_loss(net, x0, cond, alpha_bar, gen, p_uncond, predict="v")


def _step(net, x0, cond, alpha_bar, gen, p_uncond, noising=None, target=None, keep=None):
    """One training step as diffusion_loss draws it (t, noise, keep, in that order), with one
    part replaceable: noising(x0, noise, a), target(x0, noise, a), keep(uniform, p_uncond)."""
    t = torch.randint(len(alpha_bar), (len(x0),), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    uniform = torch.rand(len(x0), generator=gen)
    kept = (keep or (lambda r, p: r >= p))(uniform, p_uncond).float()
    a = alpha_bar[t].view(-1, *[1] * (x0.ndim - 1))
    x_t = (noising or (lambda x, n, a: a.sqrt() * x + (1 - a).sqrt() * n))(x0, noise, a)
    out = net(x_t, t, cond * kept[:, None])
    v = (target or (lambda x, n, a: a.sqrt() * n - (1 - a).sqrt() * x))(x0, noise, a)
    return F.mse_loss(out, v)


TRAINING_STEP = Exercise(
    name="training_step_by_hand",
    where="mmlib.diffusion.diffusion_loss with predict='v'",
    reference=diffusion_loss_v,
    inputs=_batch,
    mistakes=[
        Mistake(
            "the target is the noise (predict='eps'); this network predicts "
            "v = sqrt(a) noise - sqrt(1 - a) x0",
            partial(_step, target=lambda x, n, a: n),
        ),
        Mistake(
            "the target is x0 (predict='x0'); this network predicts "
            "v = sqrt(a) noise - sqrt(1 - a) x0",
            partial(_step, target=lambda x, n, a: x),
        ),
        Mistake(
            "v's weights are swapped: v = sqrt(a) noise - sqrt(1 - a) x0",
            partial(_step, target=lambda x, n, a: (1 - a).sqrt() * n - a.sqrt() * x),
        ),
        Mistake(
            "v has the wrong sign: v = sqrt(a) noise - sqrt(1 - a) x0",
            partial(_step, target=lambda x, n, a: (1 - a).sqrt() * x - a.sqrt() * n),
        ),
        Mistake(
            "signal and noise weights are swapped: x_t = sqrt(a) x0 + sqrt(1 - a) noise "
            "(a near 1 is almost clean)",
            partial(_step, noising=lambda x, n, a: (1 - a).sqrt() * x + a.sqrt() * n),
        ),
        Mistake(
            "the square roots are missing: x_t = sqrt(a) x0 + sqrt(1 - a) noise",
            partial(_step, noising=lambda x, n, a: a * x + (1 - a) * n),
        ),
        Mistake(
            "no condition is dropped: multiply cond by keep, 0 for a row with probability p_uncond",
            partial(_step, keep=lambda r, p: torch.ones_like(r)),
        ),
        Mistake(
            "keep is the wrong way round: a row keeps its condition when its uniform number is "
            ">= p_uncond, so it is dropped with probability p_uncond",
            partial(_step, keep=lambda r, p: r < p),
        ),
    ],
)

# ---------------------------------------------------------------------------------------------
# One DDIM step
# ---------------------------------------------------------------------------------------------


STEPS = ((300, 200), (700, 500), (990, 800))  # (t, the next step) of the course's schedule


def _state(seed: int) -> tuple:
    """A prediction v and a noisy x (B, C, H, W), alpha_bar at a step and at the next one (0-d
    tensors, as the sampler has them), and a bound that some x0 estimates pass."""
    gen = torch.Generator().manual_seed(seed)
    alpha_bar = cosine_schedule(1000)
    t, t_next = STEPS[seed % len(STEPS)]
    v, x = 1.5 * torch.randn(4, 3, 4, 4, generator=gen), torch.randn(4, 3, 4, 4, generator=gen)
    return v, x, alpha_bar[t], alpha_bar[t_next], 1.5


def ddim_step_v(v, x, a, a_next, bound):
    """mmlib's DDIM step (eta 0) for a network that predicts v, its x0 estimate kept in ±bound."""
    return ddim_step(v, x, a, a_next, "v", bound)


def _without_roots(v, x, a, a_next, bound):
    x0 = (a * x - (1 - a) * v).clamp(-bound, bound)
    return a_next * x0 + (1 - a_next) * (x - a * x0) / (1 - a)


def _from_x(v, x, a, a_next, bound):
    x0 = (a.sqrt() * x - (1 - a).sqrt() * v).clamp(-bound, bound)
    return a_next.sqrt() * x + (1 - a_next).sqrt() * (x - a.sqrt() * x0) / (1 - a).sqrt()


def _eps_from_v(v, x, a, a_next, bound):
    x0 = (a.sqrt() * x - (1 - a).sqrt() * v).clamp(-bound, bound)
    return a_next.sqrt() * x0 + (1 - a_next).sqrt() * ((1 - a).sqrt() * x + a.sqrt() * v)


DDIM_STEP = Exercise(
    name="ddim_step_by_hand",
    where="mmlib.diffusion.ddim_step with predict='v'",
    reference=ddim_step_v,
    inputs=_state,
    mistakes=[
        Mistake(
            "a and a_next are swapped: the estimates use this step's a, the jump the next one's",
            lambda v, x, a, a_next, bound: ddim_step_v(v, x, a_next, a, bound),
        ),
        Mistake(
            "the square roots are missing: the weights are sqrt(a) and sqrt(1 - a)",
            _without_roots,
        ),
        Mistake(
            "the jump starts from the noisy x; it starts from the x0 estimate: "
            "sqrt(a_next) x0 + sqrt(1 - a_next) eps",
            _from_x,
        ),
        Mistake(
            "the x0 estimate is not kept within ±bound: clamp it before the noise estimate",
            lambda v, x, a, a_next, bound: ddim_step(v, x, a, a_next, "v", None),
        ),
        Mistake(
            "the noise estimate does not follow the clamped x0: eps = (x - sqrt(a) x0) / "
            "sqrt(1 - a)",
            _eps_from_v,
        ),
    ],
)
