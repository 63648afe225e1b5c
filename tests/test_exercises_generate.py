"""Notebook 05's fill-in: the loss of one VQGAN+CLIP step, checked against the step of mmlib's
generate (clip_loss plus the smoothness prior) on its picture, its loss and the gradient to z."""

import pytest
import torch
import torch.nn.functional as F

from mmlib.exercises import core
from mmlib.exercises.generate import STEP_LOSS
from mmlib.generate import clamp_with_grad, total_variation

pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny ops: one thread is faster


def _says(start: str) -> str:
    """Return the line of STEP_LOSS's mistake that starts with `start` (the source's own text)."""
    return next(m.says for m in STEP_LOSS.mistakes if m.says.startswith(start))


def _step(clamp="grad", unit=True, sign=1.0, tv=True, cosine=False):
    """A learner's step loss, right unless told otherwise; written the way a learner might."""

    def step_loss_by_hand(z, vqgan, models, normalizers, cutouts, generator, targets, smoothness):
        x = (vqgan.decode(vqgan.vector_quantize(z)) + 1) / 2
        images = {"grad": lambda: clamp_with_grad(x, 0, 1), "none": lambda: x}[clamp]()
        crops = cutouts(images, generator)
        loss = 0.0
        for model, normalize, target in zip(models, normalizers, targets, strict=True):
            a, b = model.encode_image(normalize(crops)), target
            if unit:
                a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
            if cosine:  # 1 - cos: another distance, not a known slip
                distance = 1 - a @ b
            elif unit:  # the angle from an arccosine: the same distance, other operations
                distance = torch.acos((a @ b).clamp(-1, 1)) ** 2 / 2
            else:
                distance = 2 * ((a - b).norm(dim=-1) / 2).arcsin() ** 2
            loss = loss + sign * distance.mean()
        return images, loss + (smoothness * total_variation(images) if tv else 0.0)

    return step_loss_by_hand


def test_a_right_step_written_another_way_is_right():
    assert core.verdict(STEP_LOSS, _step()).status == "right"


def test_a_blank_step_is_not_filled_in_yet():
    def step_loss_by_hand(z, vqgan, models, normalizers, cutouts, generator, targets, smoothness):
        z_q = vqgan.vector_quantize(z)  # noqa: F841
        images = ...
        crops = cutouts(images, generator)  # noqa: F841
        return images, ...

    found = core.verdict(STEP_LOSS, step_loss_by_hand)
    assert found.status == "blank" and STEP_LOSS.where in found.line


WRONG = {  # the start of the mistake's line -> a learner's step that makes it
    "the distance is subtracted": _step(sign=-1.0),
    "the smoothness prior is missing": _step(tv=False),
    "the picture is not clamped": _step(clamp="none"),
    "the embeddings are not normalised": _step(unit=False),
}


@pytest.mark.parametrize("start", WRONG)
def test_a_known_mistake_is_named(start):
    found = core.verdict(STEP_LOSS, WRONG[start])
    assert found.status == "wrong" and found.line.endswith(_says(start))


def test_another_distance_gets_the_first_difference_in_one_line():
    found = core.verdict(STEP_LOSS, _step(cosine=True))
    assert found.status == "wrong" and "\n" not in found.line
    assert "value 2 of 3 differs from mmlib's" in found.line  # the loss: no slip it knows
