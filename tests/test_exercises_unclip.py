"""Notebook 07's fill-ins: the diffusion training step (against mmlib.diffusion.diffusion_loss)
and one DDIM step (against mmlib.diffusion.ddim_step), each with its likely mistakes named."""

import pytest
import torch
import torch.nn.functional as F

from mmlib.exercises import core
from mmlib.exercises.unclip import DDIM_STEP, TRAINING_STEP


def _said(exercise, text: str) -> str:
    return next(m.says for m in exercise.mistakes if m.says.startswith(text))


def _training_step(target="v", swap_weights=False, drop=True, own_noise=False):
    """A learner's training step, right unless one of its parts is given otherwise."""

    def step(net, x0, cond, alpha_bar, gen, p_uncond=0.1):
        t = torch.randint(len(alpha_bar), (len(x0),), generator=gen)
        noise = torch.randn(x0.shape, generator=None if own_noise else gen)
        keep = (torch.rand(len(x0), generator=gen) >= p_uncond).float()
        a = alpha_bar[t].view(-1, *[1] * (x0.ndim - 1))
        w_x0, w_noise = a.sqrt(), (1 - a).sqrt()
        if swap_weights:
            w_x0, w_noise = w_noise, w_x0
        x_t = w_x0 * x0 + w_noise * noise
        out = net(x_t, t, cond * keep[:, None] if drop else cond)
        goal = {"v": a.sqrt() * noise - (1 - a).sqrt() * x0, "eps": noise, "x0": x0}[target]
        return F.mse_loss(out, goal)

    return step


def _ddim_step(swap=False, roots=True, from_x=False):
    """A learner's DDIM step, right unless one of its parts is given otherwise."""

    def step(v, x, a, a_next, bound):
        if swap:
            a, a_next = a_next, a
        r, r_next = (a.sqrt(), (1 - a).sqrt()), (a_next.sqrt(), (1 - a_next).sqrt())
        if not roots:
            r, r_next = (a, 1 - a), (a_next, 1 - a_next)
        x0 = (r[0] * x - r[1] * v).clamp(-bound, bound)
        eps = (x - r[0] * x0) / r[1]
        return r_next[0] * (x if from_x else x0) + r_next[1] * eps

    return step


@pytest.mark.parametrize(
    "exercise,solution", [(TRAINING_STEP, _training_step()), (DDIM_STEP, _ddim_step())]
)
def test_the_solution_is_right(exercise, solution):
    assert core.verdict(exercise, solution).status == "right"


def test_a_blank_training_step_is_not_filled_in_yet():
    def blank(net, x0, cond, alpha_bar, gen, p_uncond=0.1):
        t = torch.randint(len(alpha_bar), (len(x0),), generator=gen)
        x_t = ...
        return F.mse_loss(net(x_t, t, cond), ...)  # the network meets the `...` and raises

    assert core.verdict(TRAINING_STEP, blank).status == "blank"


def test_a_blank_ddim_step_is_not_filled_in_yet():
    def blank(v, x, a, a_next, bound):
        x0 = ...
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()  # raises: a tensor times `...`
        return eps

    assert core.verdict(DDIM_STEP, blank).status == "blank"


@pytest.mark.parametrize(
    "exercise,wrong,says",
    [
        (TRAINING_STEP, _training_step(target="eps"), "the target is the noise"),
        (TRAINING_STEP, _training_step(target="x0"), "the target is x0"),
        (TRAINING_STEP, _training_step(swap_weights=True), "signal and noise weights are swapped"),
        (TRAINING_STEP, _training_step(drop=False), "no condition is dropped"),
        (DDIM_STEP, _ddim_step(swap=True), "a and a_next are swapped"),
        (DDIM_STEP, _ddim_step(roots=False), "the square roots are missing"),
        (DDIM_STEP, _ddim_step(from_x=True), "the jump starts from the noisy x"),
    ],
)
def test_a_known_mistake_is_named(exercise, wrong, says):
    found = core.verdict(exercise, wrong)
    assert found.status == "wrong" and found.line.endswith(_said(exercise, says))


@pytest.mark.parametrize(
    "exercise,wrong",
    [
        (TRAINING_STEP, _training_step(own_noise=True)),  # noise not drawn from `gen`
        (DDIM_STEP, lambda v, x, a, a_next, bound: _ddim_step()(-v, x, a, a_next, bound)),
    ],
)
def test_an_unknown_mistake_gets_the_first_difference_in_one_line(exercise, wrong):
    found = core.verdict(exercise, wrong)
    assert found.status == "wrong" and "differs from mmlib's" in found.line
    assert "\n" not in found.line
