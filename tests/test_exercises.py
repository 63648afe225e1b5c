"""The fill-in exercises: each check says right, blank or what is wrong, in one line, and the
notebook goes on with mmlib's version until the learner's is right (strict mode raises)."""

import pytest
import torch
import torch.nn.functional as F

from mmlib.exercises import core
from mmlib.exercises.contrastive import CLIP_LOSS


def _clip_loss(scale=True, both=True, halve=True, labels=None):
    def loss(i, t, s):
        logits = (s if scale else 1.0) * i @ t.T
        target = torch.arange(len(i)) if labels is None else labels(len(i))
        a, b = F.cross_entropy(logits, target), F.cross_entropy(logits.T, target)
        total = a + b if both else a
        return total / 2 if (halve and both) else total

    return loss


def test_a_right_answer_is_kept_and_said_right(capsys):
    learner = _clip_loss()
    assert core.check(CLIP_LOSS, learner) is learner
    assert capsys.readouterr().out.startswith("✓ clip_loss_by_hand is right")


def test_a_blank_answer_falls_back_to_mmlib_and_says_so_once(capsys):
    def blank(image_features, text_features, logit_scale):
        logits_per_image = ...
        labels = torch.arange(len(image_features))
        return F.cross_entropy(logits_per_image, labels)

    assert core.check(CLIP_LOSS, blank) is CLIP_LOSS.reference
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "not filled in yet" in out[0] and CLIP_LOSS.where in out[0]
    assert core.verdict(CLIP_LOSS, lambda i, t, s: ...).status == "blank"


@pytest.mark.parametrize(
    "wrong,says",
    [
        (_clip_loss(scale=False), "not multiplied by logit_scale"),
        (_clip_loss(both=False), "only the pictures choose"),
        (_clip_loss(halve=False), "added; CLIP averages"),
        (_clip_loss(labels=lambda n: torch.zeros(n, dtype=torch.long)), "differs from mmlib's"),
        (
            lambda i, t, s: F.cross_entropy(s * i @ t.T, torch.arange(len(i)), reduction="none"),
            "has shape (8,); it should be ()",
        ),
        (lambda i, t, s: None, "returns None"),
        (lambda i, t, s: i @ t, "raises RuntimeError"),
    ],
)
def test_a_wrong_answer_is_named_in_one_line(wrong, says):
    found = core.verdict(CLIP_LOSS, wrong)
    assert found.status == "wrong" and says in found.line and "\n" not in found.line


def test_strict_mode_raises_on_anything_but_right(monkeypatch):
    monkeypatch.setenv(core.STRICT_ENV, "strict")
    with pytest.raises(core.ExerciseError, match="not filled in"):
        core.check(CLIP_LOSS, lambda i, t, s: ...)
    with pytest.raises(core.ExerciseError, match="logit_scale"):
        core.check(CLIP_LOSS, _clip_loss(scale=False))
    assert core.check(CLIP_LOSS, _clip_loss()) is not CLIP_LOSS.reference


def test_an_answer_never_changes_the_inputs_the_reference_sees():
    def vandal(i, t, s):
        i.zero_()  # an in-place slip must not make the reference's answer match it
        return CLIP_LOSS.reference(i, t, s)

    assert core.verdict(CLIP_LOSS, vandal).status == "wrong"


def test_differences_are_found_in_order_type_length_shape_values():
    want = (torch.zeros(2, 3), torch.tensor([1, 2]))
    assert "2 values" in core.difference(torch.zeros(2, 3), want, 1e-6)
    assert "value 1 of 2 has shape (3, 2)" in core.difference(
        (torch.zeros(3, 2), want[1]), want, 1e-6
    )
    assert "50% of its entries" in core.difference((want[0], torch.tensor([1, 3])), want, 1e-6)
    assert "NaN" in core.difference(torch.tensor(float("nan")), torch.tensor(0.0), 1e-6)
    assert core.difference(want, want, 1e-6) is None


def test_an_error_that_merely_mentions_an_ellipsis_is_a_mistake_not_a_blank():
    def einsum_slip(i, t, s):  # torch's message says "... and no ellipsis was given"
        logits = s * torch.einsum("bnd,md->nm", i, t)
        return F.cross_entropy(logits, torch.arange(len(i)))

    found = core.verdict(CLIP_LOSS, einsum_slip)
    assert found.status == "wrong" and "raises RuntimeError" in found.line


def test_a_wrong_answer_says_in_its_one_line_that_mmlib_stands_in(capsys):
    assert core.check(CLIP_LOSS, _clip_loss(scale=False)) is CLIP_LOSS.reference
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("✗") and CLIP_LOSS.where in out[0]
