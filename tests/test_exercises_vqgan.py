"""Notebook 04's fill-in: the vector quantiser, checked against mmlib's VectorQuantizer on its
outputs and on the gradients that reach z and the codebook."""

import pytest
import torch
import torch.nn.functional as F

from mmlib.exercises import core
from mmlib.exercises.vqgan import QUANTIZE, quantize

pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny ops: one thread is faster


def _says(start: str) -> str:
    """Return the line of QUANTIZE's mistake that starts with `start` (the source's own text)."""
    return next(m.says for m in QUANTIZE.mistakes if m.says.startswith(start))


def _quantize(farthest=False, detach=True, legacy=False, straight=True, scale=1.0):
    """A learner's quantiser, right unless told otherwise; written the way a learner might."""

    def quantize_by_hand(z, codebook, beta=0.25):
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        dist = torch.cdist(flat, codebook)  # the distance itself: the same nearest code
        k = (dist.argmax(dim=1) if farthest else dist.argmin(dim=1)).view(b, h, w)
        z_q = codebook[k].permute(0, 3, 1, 2)
        stop = (lambda t: t.detach()) if detach else (lambda t: t)
        codebook_loss = F.mse_loss(z_q, stop(z))
        commitment_loss = F.mse_loss(z, stop(z_q))
        if legacy:
            loss = beta * codebook_loss + commitment_loss
        else:
            loss = codebook_loss + beta * commitment_loss
        z_q = z + ((z_q - z).detach() if straight else (z_q - z))
        return z_q, scale * loss, k

    return quantize_by_hand


def test_the_solution_is_right():
    assert core.verdict(QUANTIZE, _quantize()).status == "right"


def test_the_reference_draws_no_random_numbers():
    torch.manual_seed(0)
    QUANTIZE.reference(*QUANTIZE.inputs(0))
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(1))


def test_a_blank_quantiser_is_not_filled_in_yet():
    def quantize_by_hand(z, codebook, beta=0.25):
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)  # noqa: F841
        dist = ...  # noqa: F841
        k = ...
        k = k.view(b, h, w)
        return ..., ..., k

    found = core.verdict(QUANTIZE, quantize_by_hand)
    assert found.status == "blank" and QUANTIZE.where in found.line


@pytest.mark.parametrize(
    "wrong,start",
    [
        (_quantize(farthest=True), "k picks the farthest code"),
        (_quantize(straight=False), "no gradient reaches z"),
        (_quantize(legacy=True), "beta weights the codebook term"),
        (_quantize(detach=False), "each loss term needs one side detached"),
    ],
    ids=["argmax", "no-straight-through", "legacy-beta", "no-detach"],
)
def test_a_known_mistake_is_named(wrong, start):
    found = core.verdict(QUANTIZE, wrong)
    assert found.status == "wrong" and found.line.endswith(_says(start))


def test_an_unknown_mistake_gets_the_first_difference_in_one_line():
    found = core.verdict(QUANTIZE, _quantize(scale=72.0))  # a sum where the mean belongs
    assert found.status == "wrong" and "value 2 of 5 differs from mmlib's" in found.line
    assert "\n" not in found.line


def test_a_beta_typed_in_instead_of_the_argument_is_wrong():
    found = core.verdict(QUANTIZE, lambda z, codebook, beta: quantize(z, codebook, 0.25))
    assert found.status == "wrong"
