"""Judging generated pictures twice, so a generator cannot pass by fooling its own CLIP.

1. The *judge CLIP* (`mmlib.tiny_models`, "judge-clip"): another seed, trained on all pairs.
2. A supervised *shape/colour classifier*: a small CNN trained on rendered shapes-world
   pictures with their true labels, accurate on fresh renders (`classifier_accuracy`).

A picture is judged correct when the judge's (shape, colour) is the prompt's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmlib import toyworld, world_data
from mmlib.clip import encode_images
from mmlib.env import get_device
from mmlib.training import History, check_finite, cosine_lr, due, progress_bar, set_lr
from mmlib.zeroshot import SHAPES_TEMPLATES, build_classifier

# What the course calls each judge, by its key in `judge` verdicts.
JUDGE_NAMES = {"judge_clip": "judge CLIP", "classifier": "classifier"}


class ShapeColourNet(nn.Module):
    """A small CNN with two heads: which shape, which colour (of the main object)."""

    def __init__(self, width: int = 32):
        super().__init__()

        def block(cin, cout, stride):
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.features = nn.Sequential(
            block(3, width, 1),
            block(width, width, 1),
            block(width, 2 * width, 2),
            block(2 * width, 2 * width, 1),
            block(2 * width, 4 * width, 2),
            block(4 * width, 4 * width, 1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.shape_head = nn.Linear(4 * width, len(toyworld.SHAPES))
        self.colour_head = nn.Linear(4 * width, len(toyworld.COLOUR_NAMES))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (shape logits, colour logits) for images (B, 3, 32, 32) in [0, 1]."""
        h = self.features(images * 2 - 1)
        return self.shape_head(h), self.colour_head(h)


@dataclass
class ClassifierTrainConfig:
    """How the shape/colour classifier is trained."""

    steps: int = 400
    batch_size: int = 128
    lr: float = 3e-3
    seed: int = 7


def _labelled_batch(
    seed: int, step: int, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pairs = toyworld.all_pairs()
    images, shapes, colours = [], [], []
    for k in range(batch_size):
        i = step * batch_size + k
        shape, colour = pairs[i % len(pairs)]
        scene = toyworld.sample_scene(seed, i, "all", "single", pair=(shape, colour))
        images.append(toyworld.to_tensor(toyworld.render(scene)))
        shapes.append(toyworld.SHAPES.index(shape))
        colours.append(toyworld.COLOUR_NAMES.index(colour))
    return torch.stack(images), torch.tensor(shapes), torch.tensor(colours)


def train_classifier(
    config: ClassifierTrainConfig | None = None, progress: bool = True, device=None
):
    """Return (trained ShapeColourNet in eval mode, History)."""
    config = config or ClassifierTrainConfig()
    dev = get_device(device)
    torch.manual_seed(config.seed)
    model = ShapeColourNet().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    history, seconds = History(), 0.0
    for step in progress_bar(0, config.steps, "train judge classifier", progress):
        tick = time.perf_counter()
        images, shapes, colours = (
            t.to(dev) for t in _labelled_batch(config.seed, step, config.batch_size)
        )
        set_lr(opt, cosine_lr(step, config.steps, 20, config.lr))
        shape_logits, colour_logits = model(images)
        loss = F.cross_entropy(shape_logits, shapes) + F.cross_entropy(colour_logits, colours)
        check_finite(loss, step, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seconds += time.perf_counter() - tick
        if due(step, 20, config.steps, first=True):
            history.log(step, loss=loss.item(), seconds=seconds)
    return model.eval(), history


@torch.no_grad()
def classify(model: ShapeColourNet, images: torch.Tensor) -> list[tuple[str, str]]:
    """Return the (shape, colour) the classifier sees in each image (B, 3, 32, 32) in [0, 1]."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[-1] != toyworld.IMAGE_SIZE or images.shape[-2] != toyworld.IMAGE_SIZE:
        images = F.interpolate(
            images,
            size=(toyworld.IMAGE_SIZE,) * 2,
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
    dev = next(model.parameters()).device
    shape_logits, colour_logits = model.eval()(images.clamp(0, 1).to(dev))
    return [
        (toyworld.SHAPES[s], toyworld.COLOUR_NAMES[c])
        for s, c in zip(
            shape_logits.argmax(1).tolist(), colour_logits.argmax(1).tolist(), strict=True
        )
    ]


def classifier_accuracy(model: ShapeColourNet, per_pair: int = 10, seed: int = 2468) -> float:
    """Return the fraction of fresh renders (all 48 pairs) whose shape and colour are both right."""
    data = world_data.PairImages(per_pair=per_pair, seed=seed)
    images = torch.stack([data[i][0] for i in range(len(data))])
    truth = [data.pairs[i // per_pair] for i in range(len(data))]
    return sum(p == t for p, t in zip(classify(model, images), truth, strict=True)) / len(truth)


@torch.no_grad()
def clip_judge(model, tokenizer, images: torch.Tensor) -> list[tuple[str, str]]:
    """Return the (shape, colour) a CLIP picks for each image among all 48 pairs (zero-shot)."""
    pairs = toyworld.all_pairs()
    classifier = build_classifier(
        model, tokenizer, [toyworld.pair_label(s, c) for s, c in pairs], SHAPES_TEMPLATES
    )
    feats = encode_images(model, None, images.clamp(0, 1), progress=False)
    return [pairs[k] for k in (feats @ classifier).argmax(dim=1).tolist()]


def benchmark_pairs(n_seen: int = 12, prompt_set: int = 0) -> list[tuple[str, str]]:
    """Return the generation benchmark's targets: `n_seen` seen pairs, then the 8 held-out ones.

    VQGAN+CLIP (notebook 05) and the token transformer (notebook 06) are judged on these same
    20 (shape, colour) pairs, so their numbers compare. Seen pairs are spread over all shapes
    and colours: every third pair the held-out split trains on, starting at `prompt_set` (0, 1
    or 2: three disjoint sets of seen pairs, for measuring how much a result owes to the pairs
    it happened to be asked for).
    """
    held = list(toyworld.HELD_OUT_PAIRS)
    if prompt_set not in (0, 1, 2):
        raise ValueError(f"prompt_set must be 0, 1 or 2, got {prompt_set!r}")
    seen = [p for p in toyworld.all_pairs() if p not in held][prompt_set::3]
    if not 0 <= n_seen <= len(seen):
        raise ValueError(f"n_seen must be between 0 and {len(seen)}, got {n_seen}")
    return seen[:n_seen] + held


def fractions_by_split(correct: Sequence[bool], pairs: Sequence[tuple[str, str]]) -> dict:
    """Return the fraction correct on seen pairs, on held-out pairs and on all of them
    ({"seen", "heldout", "all"}; nan for a group with no pictures)."""
    if len(correct) != len(pairs):
        raise ValueError(f"{len(correct)} verdicts for {len(pairs)} pairs")
    held = set(toyworld.HELD_OUT_PAIRS)
    groups = {
        "seen": [ok for ok, p in zip(correct, pairs, strict=True) if tuple(p) not in held],
        "heldout": [ok for ok, p in zip(correct, pairs, strict=True) if tuple(p) in held],
        "all": list(correct),
    }
    return {g: sum(c) / len(c) if c else float("nan") for g, c in groups.items()}


def benchmark_prompt(shape: str, colour: str) -> str:
    """Return the caption a generator is given for a target pair, e.g. 'a red star'."""
    return toyworld.article(toyworld.pair_label(shape, colour))


def judge(images: torch.Tensor, targets: list[tuple[str, str]], judge_clip, classifier) -> dict:
    """Return each judge's verdicts on `images` for their target (shape, colour) pairs."""
    if len(images) != len(targets):
        raise ValueError(f"{len(images)} images for {len(targets)} targets")
    model, _, tokenizer = judge_clip
    seen = {
        "judge_clip": clip_judge(model, tokenizer, images),
        "classifier": classify(classifier, images),
    }
    result = {}
    for name, predictions in seen.items():
        correct = [p == t for p, t in zip(predictions, targets, strict=True)]
        result[name] = {
            "predictions": predictions,
            "correct": correct,
            "fraction": sum(correct) / len(correct),
        }
    return result


def attribute_fractions(
    verdicts: dict, targets: Sequence[tuple[str, str]]
) -> dict[str, dict[str, float]]:
    """Return, per judge, the fractions of pictures whose shape, whose colour, and whose both
    are the target's, from `judge.judge`'s verdicts: which of the two a generator gets wrong."""
    out = {}
    for name, v in verdicts.items():
        if len(v["predictions"]) != len(targets) or not targets:
            raise ValueError(f"{len(v['predictions'])} verdicts for {len(targets)} targets")
        pairs = list(zip(v["predictions"], targets, strict=True))
        out[name] = {
            "shape": sum(p[0] == t[0] for p, t in pairs) / len(pairs),
            "colour": sum(p[1] == t[1] for p, t in pairs) / len(pairs),
            "both": sum(tuple(p) == tuple(t) for p, t in pairs) / len(pairs),
        }
    return out
