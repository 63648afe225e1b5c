"""DALL-E style generation on the shapes world (notebook 06): the token transformer
(`mmlib.transformer`) learns [caption, tiny-VQGAN image tokens], draws token by token, and the
course's CLIPs re-rank its samples; the judges measure the result.

DALL-E (Ramesh et al., 2021) turns a picture into a grid of codebook indices (a dVAE; here the
tiny VQGAN: 8 x 8 = 64 tokens from 256 codes), appends them to the caption's text tokens, and
trains a decoder-only transformer to predict every next token of [text tokens, image tokens].
To draw, it is given a caption and samples the 64 image tokens one at a time; the VQGAN decodes
them. DALL-E drew 512 pictures per caption and kept the ones CLIP liked best: `rerank`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import torch

from mmlib import judge, toyworld
from mmlib.clip import as_clips, clip_scores
from mmlib.transformer import (
    TokenTransformer,
    TransformerConfig,
    sample,
)
from mmlib.vqgan import decode_tokens

# The world the token model learns (`dalle_training.DalleTrainConfig`), and unCLIP's too, so the
# two compare: one large object on a plain grey background. With a few CPU minutes of training,
# the full world's small shapes and gradient backgrounds leave it drawing blobs (notebook 06
# shows the measurements).
WORLD = {"object_size": "large", "background": "plain"}

# ---------------------------------------------------------------------------------------------
# Text tokens: CLIP's BPE, mapped to the few ids the shapes world uses
# ---------------------------------------------------------------------------------------------


# Words of the caption grammar that are not shapes, colours, sizes, relations or counts.
GRAMMAR_WORDS = (
    "a",
    "an",
    "one",
    "picture",
    "of",
    "in",
    "the",
    "top",
    "bottom",
    "left",
    "right",
    "centre",
)


def grammar_words() -> list[str]:
    """Return every word the shapes world's captions can use (plurals included), sorted."""
    words = set(GRAMMAR_WORDS) | set(toyworld.COLOUR_NAMES) | set(toyworld.SIZES)
    words |= set(toyworld.COUNT_WORDS.values())
    words |= {w for relation in toyworld.RELATIONS for w in relation.split()}
    words |= toyworld.shape_words()
    return sorted(words)


def build_text_vocab(tokenizer) -> tuple[int, ...]:
    """Return the sorted CLIP BPE ids of every grammar word: the compact text vocabulary.

    DALL-E had a 16,384-token BPE vocabulary; the shapes world needs a few dozen of CLIP's
    ids, so the text embedding and text head stay small. Other words map to UNK.
    """
    return tuple(sorted({i for word in grammar_words() for i in tokenizer.encode(word)}))


def new_model(tokenizer, config: TransformerConfig | None = None) -> TokenTransformer:
    """Return a fresh TokenTransformer that reads the shapes world's captions (its text
    vocabulary built from `tokenizer` when `config` has none)."""
    config = config or TransformerConfig()
    if not config.text_vocab:
        config = replace(config, text_vocab=build_text_vocab(tokenizer))
    return TokenTransformer(config, tokenizer)


# ---------------------------------------------------------------------------------------------
# Drawing: the picture as its tokens arrive (how it is trained: `mmlib.dalle_training`)
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def decode_partial(
    vqgan, tokens: torch.Tensor, n_tokens: int = 64, grey: float = 0.5
) -> torch.Tensor:
    """Return pictures of partly sampled token grids: the first tokens.shape[1] are known.

    The unknown rest is filled with each grid's last known token (its neighbour, usually
    background) so the decoder sees something plausible, then those cells are painted `grey`:
    the picture grows cell by cell as sampling goes on. No known token: all grey.
    """
    known = tokens.shape[1]
    if not 0 <= known <= n_tokens:
        raise ValueError(f"got {known} tokens; a grid has {n_tokens}")
    side = int(round(n_tokens**0.5))
    if known == 0:
        size = side * getattr(vqgan, "factor", 4)
        return torch.full((len(tokens), 3, size, size), grey)
    fill = tokens[:, -1:].expand(-1, n_tokens - known)
    images = decode_tokens(vqgan, torch.cat([tokens, fill], dim=1))
    cell = images.shape[-1] // side
    unknown = (torch.arange(n_tokens) >= known).view(side, side).float()
    unknown = unknown.repeat_interleave(cell, 0).repeat_interleave(cell, 1)
    return images * (1 - unknown) + grey * unknown


# ---------------------------------------------------------------------------------------------
# CLIP re-ranking and the measurement
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def rerank(
    images: torch.Tensor, caption: str, clips, keep: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (best `keep` images, their CLIP scores, their indices), best first.

    As DALL-E: draw many pictures for a caption, let CLIP score each against it, keep the top.
    `clips`: one CLIP (model, preprocess, tokenizer), or several whose cosine similarities are
    summed (`clip.clip_scores`, as VQGAN+CLIP's ensemble).
    """
    if len(images) == 0 or keep < 1:
        raise ValueError(f"rerank needs images and keep >= 1, got {len(images)} and {keep}")
    scores, order = clip_scores(images, [caption] * len(images), as_clips(clips)).sort(
        descending=True
    )
    keep = min(keep, len(images))
    return images[order[:keep]], scores[:keep], order[:keep]


BENCHMARK_DRAWS = 4  # draws of each benchmark pair when the course measures the model

# What worked best on the benchmark (evaluate_dalle, 8 sampling seeds): guided, top-8 sampling
# at temperature 0.8. Guidance 2 or 4, top-k 4 or temperature 0.7 were no better.
SAMPLING = {"guidance": 3.0, "top_k": 8, "temperature": 0.8}


def evaluate_dalle(
    model: TokenTransformer,
    vqgan,
    clips,
    judges,
    pairs: Sequence[tuple[str, str]] | None = None,
    n: int = 8,
    seed: int = 0,
    draws: int = 1,
    **sampling,
) -> dict:
    """Return the judges' verdicts on n samples per target pair, without and with re-ranking.

    Each pair is drawn `draws` times (n samples each time): with 12 seen pairs one draw moves a
    fraction in steps of 1/12, so the course measures 4 draws (BENCHMARK_DRAWS).

    `clips` re-rank: one CLIP or several (the course's two, `zoo.get_generation_clips`);
    `judges` = (judge CLIP, classifier) as `tiny_models.get_judges()` gives. For each judge and each
    way ("first": one sample per pair, "all": every sample, "reranked": the CLIPs' best of n,
    and with several CLIPs "reranked_one": the first CLIP's best of n) the fraction judged
    correct on seen, held-out and all pairs; also samples per second (sampling and decoding
    only); "reranked_by_draw": the "reranked" fractions of each draw; "pairs" (draws x pairs),
    the pictures (draws x pairs, n, 3, H, W) and "best", the re-ranked ones (draws x pairs, 3,
    H, W). `sampling`: keyword arguments of `sample`, each replacing SAMPLING's (the rest stay).
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    one_draw = list(pairs) if pairs is not None else judge.benchmark_pairs()
    pairs = one_draw * draws
    captions = [judge.benchmark_prompt(s, c) for s, c in pairs]
    tick = time.perf_counter()
    images = decode_tokens(
        vqgan, sample(model, captions, n=n, seed=seed, **{**SAMPLING, **sampling})
    )
    seconds = time.perf_counter() - tick
    images = images.view(len(pairs), n, *images.shape[1:])
    clips = as_clips(clips)
    ways = {
        "first": (images[:, 0], pairs),
        "all": (images.flatten(0, 1), [p for p in pairs for _ in range(n)]),
    }
    rerankers = {"reranked": clips, **({"reranked_one": clips[:1]} if len(clips) > 1 else {})}
    for way, by in rerankers.items():
        ways[way] = (
            torch.stack([rerank(im, c, by)[0][0] for im, c in zip(images, captions, strict=True)]),
            pairs,
        )
    result = {
        "samples_per_second": len(pairs) * n / seconds,
        "n": n,
        "draws": draws,
        "pairs": pairs,
    }
    for way, (ims, targets) in ways.items():
        verdicts = judge.judge(ims, targets, *judges)
        result[way] = {
            name: judge.fractions_by_split(v["correct"], targets) for name, v in verdicts.items()
        }
        if way == "reranked":
            k = len(one_draw)
            result["reranked_by_draw"] = {
                name: [
                    judge.fractions_by_split(v["correct"][d * k : (d + 1) * k], one_draw)
                    for d in range(draws)
                ]
                for name, v in verdicts.items()
            }
    result["images"], result["best"] = images, ways["reranked"][0]
    return result


def _by_judge(fractions_by_judge: dict, group: str) -> dict[str, float]:
    # {"judge_clip": {"seen": .., "heldout": .., "all": ..}, ...} -> {"judge CLIP": .., ...}
    return {judge.JUDGE_NAMES[j]: fractions[group] for j, fractions in fractions_by_judge.items()}


def judged_rows(ev: dict, vqgan_clip: dict | None = None) -> dict[str, dict[str, float]]:
    """Return the bars that compare the token model with VQGAN+CLIP, for `plots.judged_bars`:
    {label: {judge: fraction}} for the first sample and the best of n (by one CLIP, where
    `evaluate_dalle` had several, and by all), seen and held-out pairs apart, then VQGAN+CLIP's
    cached benchmark (`tiny_generators.vqgan_clip_results()`) judged on its pairs."""
    ways = {
        "first": "first sample",
        "reranked_one": "best of n, one CLIP",
        "reranked": "best of n, all CLIPs",
    }
    rows = {}
    for group in ("seen", "heldout"):
        for way, label in ways.items():
            if way in ev:
                rows[f"{label}\n{group}"] = _by_judge(ev[way], group)
        if vqgan_clip is not None:
            rows[f"VQGAN+CLIP\n{group}"] = {
                judge.JUDGE_NAMES[j]: judge.fractions_by_split(
                    vqgan_clip[j]["correct"], vqgan_clip["pairs"]
                )[group]
                for j in judge.JUDGE_NAMES
            }
    return rows


WAY_NAMES = {
    "first": "first sample",
    "all": "every sample",
    "reranked": "best of n",
    "reranked_one": "best of n, one CLIP",
}


def compare_rows(
    evaluations: dict[str, dict], ways: Sequence[str] = ("all", "reranked"), group: str = "all"
) -> dict[str, dict[str, float]]:
    """Return bars that compare sampling settings, for `plots.judged_bars`: {"setting\\nway":
    {judge: fraction}} from {setting name: `evaluate_dalle` result}, way by way ("first",
    "all", "reranked", "reranked_one"), on the `group` of pairs ("seen", "heldout", "all")."""
    if not evaluations:
        raise ValueError("no evaluations to compare")
    if group not in ("seen", "heldout", "all"):
        raise ValueError(f"group must be 'seen', 'heldout' or 'all', got {group!r}")
    rows = {}
    for way in ways:
        for name, ev in evaluations.items():
            if way not in ev:
                known = [w for w in WAY_NAMES if w in ev]
                raise ValueError(f"{name!r} has no way {way!r}; it has {known}")
            label = WAY_NAMES[way].replace("best of n", f"best of {ev.get('n', 'n')}")
            rows[f"{name}\n{label}"] = _by_judge(ev[way], group)
    return rows
