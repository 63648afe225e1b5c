"""Notebook 06's fill-in: the next token's distribution (guidance, temperature, top-k, softmax),
checked against mmlib.transformer.next_token_probs, with each likely mistake named."""

import pytest
import torch

from mmlib.exercises import core
from mmlib.exercises.dalle import MIXED, NEXT_TOKEN_PROBS


def _said(text: str) -> str:
    return next(m.says for m in NEXT_TOKEN_PROBS.mistakes if m.says.startswith(text))


def _probs(guide=None, scale=None, keep="largest", top_k=True, mix_probs=False, kth_at=-1):
    """A learner's answer, right unless one of its parts is given otherwise."""

    def probs(c, u, g, t, k):
        if mix_probs:
            c, u = c.softmax(-1), u.softmax(-1)
        logits = (guide or (lambda c, u, g: u + g * (c - u)))(c, u, g)
        logits = (scale or (lambda x, t: x / t))(logits, t)
        if top_k:
            kth = torch.topk(logits, k, largest=keep == "largest").values[:, kth_at, None]
            drop = logits < kth if keep == "largest" else logits > kth
            logits = logits.masked_fill(drop, float("-inf"))
        return logits.softmax(dim=-1)

    return probs


def test_the_solution_is_right():
    assert core.verdict(NEXT_TOKEN_PROBS, _probs()).status == "right"


def test_a_blank_answer_is_not_filled_in_yet():
    def blank(cond_logits, uncond_logits, guidance, temperature, top_k):
        logits = ...
        return logits

    assert core.verdict(NEXT_TOKEN_PROBS, blank).status == "blank"


@pytest.mark.parametrize(
    "wrong,says",
    [
        (_probs(guide=lambda c, u, g: c + g * (u - c)), _said("guidance runs the wrong way")),
        (_probs(scale=lambda x, t: x * t), _said("the temperature multiplies")),
        (_probs(keep="smallest"), _said("top-k keeps the k smallest")),
        (_probs(top_k=False), _said("every token keeps some probability")),
        (_probs(mix_probs=True), MIXED),
    ],
)
def test_a_known_mistake_is_named(wrong, says):
    found = core.verdict(NEXT_TOKEN_PROBS, wrong)
    assert found.status == "wrong" and found.line.endswith(says)


def test_an_unknown_mistake_gets_the_first_difference_in_one_line():
    found = core.verdict(NEXT_TOKEN_PROBS, _probs(kth_at=0))  # the largest logit, not the k-th
    assert found.status == "wrong" and "differs from mmlib's" in found.line
    assert "\n" not in found.line
