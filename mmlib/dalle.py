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

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mmlib import judge, toyworld
from mmlib.clip import as_clips, clip_scores
from mmlib.env import get_device
from mmlib.store.checkpoints import save_checkpoint
from mmlib.training import (
    History,
    bars_on,
    check_finite,
    cosine_lr,
    due,
    progress_bar,
    recipe,
    resume,
    set_lr,
)
from mmlib.transformer import (
    TokenTransformer,
    TransformerConfig,
    empty_caption,
    next_token_loss,
    sample,
)
from mmlib.vqgan import decode_tokens, image_tokens

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
# Data: captions and token grids of shapes-world scenes
# ---------------------------------------------------------------------------------------------


def scene_data(
    model: TokenTransformer,
    vqgan,
    n: int,
    seed: int = 0,
    split: str = "heldout",
    progress: bool = False,
    object_size: str | None = None,
    background: str = "gradient",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (text ids (n, text_len), image tokens (n, 64)) of n single-object scenes.

    With split="heldout" no HELD_OUT_PAIRS appear: the held-out measurement relies on it.
    `object_size` and `background` pick a simpler world (`toyworld.sample_scene`).
    A pure function of its arguments, so callers may cache the two tensors.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    scenes = [
        toyworld.sample_scene(
            seed, i, split, "single", object_size=object_size, background=background
        )
        for i in range(n)
    ]
    text = model.encode_captions([s.caption for s in scenes])
    chunks = []
    batches = range(0, n, 1024)
    for i in tqdm(batches, desc="encode scenes", disable=not bars_on(progress), leave=False):
        images = torch.stack([toyworld.to_tensor(toyworld.render(s)) for s in scenes[i : i + 1024]])
        chunks.append(image_tokens(vqgan, images))
    return text, torch.cat(chunks)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclass
class DalleTrainConfig:
    """Everything that decides a training run besides the model's size."""

    steps: int = 2500
    batch_size: int = 32
    lr: float = 6e-3
    warmup: int = 50
    weight_decay: float = 0.01
    n_scenes: int = 24000  # distinct training scenes, encoded once (batches cycle through them)
    p_uncond: float = 0.1  # captions dropped to [SOT, EOT]: teaches p(image) for `guidance`
    seed: int = 0
    split: str = "heldout"
    # The world it learns: one large object on a plain grey background. With ~5 CPU minutes of
    # training, the full world's small shapes and gradient backgrounds leave it drawing blobs
    # (notebook 06 shows the measurements); None / "gradient" train on the full world.
    object_size: str | None = "large"
    background: str = "plain"
    checkpoint_every: int = 250
    log_every: int = 10


def train_dalle(
    config: TransformerConfig | None,
    train_config: DalleTrainConfig | None,
    vqgan,
    tokenizer,
    progress: bool = True,
    folder: str | Path | None = None,
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
    device=None,
) -> tuple[TokenTransformer, History]:
    """Train a TokenTransformer on shapes-world scenes; return (model in eval mode, History).

    AdamW with warm-up and cosine decay; each step a random batch of the encoded scenes.
    With `folder`, checkpoints go there and a run resumes the last one. `data` = the
    (text ids, image tokens) of `scene_data`, when the caller has them cached.
    """
    tc = train_config or DalleTrainConfig()
    if tc.steps < 1 or tc.batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {tc.steps}, {tc.batch_size}")
    if vqgan is None and data is None:
        raise ValueError("give the VQGAN that turns pictures into tokens (or `data`)")
    dev = get_device(device)
    torch.manual_seed(tc.seed)
    model = new_model(tokenizer, config).train()
    tick = time.perf_counter()
    text, image = (
        data
        if data is not None
        else scene_data(
            model, vqgan, tc.n_scenes, tc.seed, tc.split, progress, tc.object_size, tc.background
        )
    )
    data_seconds = time.perf_counter() - tick
    text, image = text.to(dev), image.to(dev)
    model.to(dev)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tc.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=tc.lr,
        betas=(0.9, 0.95),
    )
    saved = json.loads(json.dumps({"model": asdict(model.config), "train": recipe(tc)}))
    start, history = resume(folder, model, optimizer, saved)
    gen = torch.Generator().manual_seed(tc.seed)
    seconds = history.last("seconds", 0.0)
    bar = progress_bar(start, tc.steps, "train DALL-E", progress)
    for step in bar:
        tick = time.perf_counter()
        # batch `step` is the same whether or not the run was resumed
        rows = torch.randint(len(text), (tc.batch_size,), generator=gen.manual_seed(tc.seed + step))
        lr = set_lr(optimizer, cosine_lr(step, tc.steps, tc.warmup, tc.lr, min_ratio=0.05))
        drop = torch.rand(tc.batch_size, generator=gen) < tc.p_uncond
        rows, drop = rows.to(dev), drop.to(dev)
        text_batch = text[rows].clone()
        text_batch[drop] = empty_caption(model.config.text_len).to(dev)
        losses = next_token_loss(model, text_batch, image[rows])
        check_finite(losses["loss"], step, folder)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        seconds += time.perf_counter() - tick
        if due(step, tc.log_every, tc.steps, first=True):
            history.log(
                step,
                loss=losses["loss"],
                text_loss=losses["text"],
                image_loss=losses["image"],
                lr=lr,
                seconds=seconds,
                data_seconds=data_seconds,
            )
            bar.set_postfix(
                image=f"{losses['image'].item():.3f}", text=f"{losses['text'].item():.3f}"
            )
        if folder is not None and due(step, tc.checkpoint_every, tc.steps):
            save_checkpoint(folder, model, optimizer, step + 1, saved, history)
    bar.close()
    return model.eval(), history


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
    `judges` = (judge CLIP, classifier) as `zoo.get_judges()` gives. For each judge and each
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


JUDGE_NAMES = {"judge_clip": "judge CLIP", "classifier": "classifier"}


def _by_judge(fractions_by_judge: dict, group: str) -> dict[str, float]:
    # {"judge_clip": {"seen": .., "heldout": .., "all": ..}, ...} -> {"judge CLIP": .., ...}
    return {JUDGE_NAMES[j]: fractions[group] for j, fractions in fractions_by_judge.items()}


def judged_rows(ev: dict, vqgan_clip: dict | None = None) -> dict[str, dict[str, float]]:
    """Return the bars that compare the token model with VQGAN+CLIP, for `plots.judged_bars`:
    {label: {judge: fraction}} for the first sample and the best of n (by one CLIP, where
    `evaluate_dalle` had several, and by all), seen and held-out pairs apart, then VQGAN+CLIP's
    cached benchmark (`zoo.vqgan_clip_results()`) judged on its pairs."""
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
                JUDGE_NAMES[j]: judge.fractions_by_split(
                    vqgan_clip[j]["correct"], vqgan_clip["pairs"]
                )[group]
                for j in JUDGE_NAMES
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
