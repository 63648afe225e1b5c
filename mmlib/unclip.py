"""DALL-E 2 in miniature (notebook 07): unCLIP (Ramesh et al. 2022, "Hierarchical Text-Conditional
Image Generation with CLIP Latents") on the shapes world, with the course's tiny CLIP and VQGAN.

Two diffusion models (`mmlib.diffusion`) stand between a caption and a picture:

1. the **prior** turns the caption's CLIP *text* embedding into a CLIP *image* embedding: it
   diffuses the normalised image embedding scaled by sqrt(D) (so each coordinate is about unit
   size, as the noise), conditioned on the text embedding scaled alike, and predicts the clean
   embedding (the paper's choice); of 2 samples it keeps the one closer to the text;
2. the **decoder** turns a CLIP image embedding into a picture: it diffuses the tiny VQGAN's
   8 x 8 latents (standardised per channel), the embedding projected and added to the step's
   embedding, predicts v (`DECODER_PREDICTS`), and the VQGAN decodes what it drew.

Both drop their condition (to zeros) `p_uncond` of the time, which classifier-free guidance
needs. The paper's comparison (Sec. 5.1) is `evaluate_unclip`: the decoder fed the prior's
embedding, the caption's text embedding directly, a zero embedding, or the true image embedding
of a render (the oracle), judged by the course's two judges. Both models learn the world the
token model of notebook 06 learns (`dalle.WORLD`: one large object on plain grey),
from held-out-split scenes only, so the held-out pairs measure composition; how they train is
`mmlib.unclip_training`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from mmlib import judge, toyworld
from mmlib.clip import encode_images, encode_texts
from mmlib.dalle import WORLD as TOKEN_WORLD
from mmlib.dalle import grammar_words
from mmlib.diffusion import (
    UNet,
    UNetConfig,
    VectorDenoiser,
    check_guidance,
    cosine_schedule,
    ddim_sample,
)
from mmlib.vqgan import from_model_range
from mmlib.vqgan_training import reconstruct

# The world both models learn: the token model's (notebook 06), so the two compare.
WORLD = dict(TOKEN_WORLD)

# How the course samples (`evaluate_unclip` and the notebook): the paper's 64 prior steps, unguided
# (guiding the prior did not help in the paper), best of 2; 50 decoder steps with guidance 5.
PRIOR_SAMPLING = {"steps": 64, "guidance": 1.0, "best_of": 2}
DECODER_SAMPLING = {"steps": 50, "guidance": 5.0}
SCHEDULE_STEPS = 1000
# The decoder predicts v = sqrt(a) noise - sqrt(1 - a) x0 (Salimans & Ho 2022). Predicting the
# noise, as the paper's decoder does, drew noise here: at the noisiest steps x0 is the noisy
# input divided by sqrt(alpha_bar) ~ 0, so the walk starts from nonsense that a short training
# never learns to undo (docs/unclip-recipe.md has what each choice measured).
DECODER_PREDICTS = "v"
LATENT_CLIP = 4.0  # DDIM's x0 estimate of the standardised latents is kept within +-4 std


# ---------------------------------------------------------------------------------------------
# The world's scenes, their pictures, and captions as CLIP embeddings
# ---------------------------------------------------------------------------------------------


def world_scenes(n: int, seed: int = 0, split: str = "heldout") -> list[toyworld.Scene]:
    """Return n single-object scenes of WORLD (the token model's), from `split`."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [toyworld.sample_scene(seed, i, split, "single", **WORLD) for i in range(n)]


def render(scenes: Sequence[toyworld.Scene]) -> torch.Tensor:
    """Return the pictures (N, 3, 32, 32) in [0, 1] of `scenes`."""
    return torch.stack([toyworld.to_tensor(toyworld.render(s)) for s in scenes])


def pair_renders(pairs: Sequence[tuple[str, str]], n: int, seed: int = 0) -> torch.Tensor:
    """Return n renders of each (shape, colour) in WORLD, pair by pair: (len(pairs) * n, 3, H, W),
    each its own scene (place, size). Held-out pairs too: the oracle's pictures."""
    scenes = [
        toyworld.sample_scene(seed, i * n + k, "all", "single", pair=tuple(p), **WORLD)
        for i, p in enumerate(pairs)
        for k in range(n)
    ]
    return render(scenes)


def text_embeddings(clip, captions: str | Sequence[str]) -> torch.Tensor:
    """Return the CLIP's normalised text embeddings (N, D) of captions, each of which must name
    a shape or a colour of the shapes world (else a ValueError says which and what it knows)."""
    captions = [captions] if isinstance(captions, str) else list(captions)
    things = set(toyworld.COLOUR_NAMES) | toyworld.shape_words()
    for caption in captions:
        if not isinstance(caption, str) or not set(re.findall(r"[a-z]+", caption.lower())) & things:
            raise ValueError(
                f"caption {caption!r} names no shape or colour of this world; describe one, "
                f"e.g. 'a red star' (its words: {', '.join(grammar_words())})"
            )
    model, _, tokenizer = clip
    return encode_texts(model, tokenizer, captions, progress=False)


def scaled(embeddings: torch.Tensor, dim: int) -> torch.Tensor:
    """Return normalised embeddings scaled by sqrt(dim): unit-size coordinates, as the noise."""
    if embeddings.ndim != 2 or embeddings.shape[1] != dim:
        raise ValueError(
            f"embeddings must be (N, {dim}) (this CLIP's size), got {tuple(embeddings.shape)}"
        )
    return embeddings.float() * math.sqrt(dim)


# ---------------------------------------------------------------------------------------------
# The prior: text embedding -> image embedding
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_prior(
    prior: VectorDenoiser,
    text: torch.Tensor,
    steps: int = PRIOR_SAMPLING["steps"],
    guidance: float = PRIOR_SAMPLING["guidance"],
    best_of: int = PRIOR_SAMPLING["best_of"],
    seed: int = 0,
) -> torch.Tensor:
    """Return image embeddings (N, D), normalised, for text embeddings (N, D): `best_of` samples
    each, the one closest to its text kept (the paper draws 2 and keeps the better)."""
    if best_of < 1:
        raise ValueError(f"best_of must be >= 1, got {best_of}")
    dim = prior.config.dim
    cond = scaled(text, dim).repeat(best_of, 1)
    out = ddim_sample(
        prior, cond, (dim,), cosine_schedule(SCHEDULE_STEPS), steps, guidance, "x0", seed=seed
    )
    draws = nn.functional.normalize(out.cpu(), dim=-1).view(best_of, len(text), dim)
    best = (draws * nn.functional.normalize(text.float().cpu(), dim=-1)).sum(-1).argmax(0)
    return draws[best, torch.arange(len(text))]


# ---------------------------------------------------------------------------------------------
# The decoder: image embedding -> VQGAN latents -> picture
# ---------------------------------------------------------------------------------------------


class LatentDecoder(nn.Module):
    """unCLIP's decoder on the tiny VQGAN's latents: a `UNet` plus the latents' per-channel mean
    and std (the U-Net works on standardised latents)."""

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.unet = UNet(config)
        c = self.unet.config.channels
        self.register_buffer("mean", torch.zeros(c))
        self.register_buffer("std", torch.ones(c))

    def standardise(self, latents: torch.Tensor) -> torch.Tensor:
        """Return latents with each channel at mean 0, std 1 (the data's statistics)."""
        return (latents - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)

    def unstandardise(self, x: torch.Tensor) -> torch.Tensor:
        """Return standardised latents in the VQGAN's own scale again."""
        return x * self.std.view(1, -1, 1, 1) + self.mean.view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Return the U-Net's prediction (`DECODER_PREDICTS`) for standardised noisy latents x."""
        return self.unet(x, t, cond)


@torch.no_grad()
def decode(
    decoder: LatentDecoder,
    vqgan,
    embeddings: torch.Tensor,
    steps: int = DECODER_SAMPLING["steps"],
    guidance: float = DECODER_SAMPLING["guidance"],
    seed: int = 0,
    every: int = 0,
):
    """Return pictures (N, 3, 32, 32) in [0, 1] drawn for CLIP image embeddings (N, D) (zeros:
    no condition). DDIM over the standardised latents, which are then un-standardised, snapped
    to the VQGAN's codebook and decoded. With `every` > 0, also the pictures of the x0 estimates
    of every `every`-th step (a list, noisiest first)."""
    c = decoder.unet.config
    side = 32 // vqgan.factor
    out = ddim_sample(
        decoder,
        scaled(embeddings, c.cond_dim),
        (c.channels, side, side),
        cosine_schedule(SCHEDULE_STEPS),
        steps,
        guidance,
        DECODER_PREDICTS,
        LATENT_CLIP,
        seed,
        every=every,
    )
    x, frames = out if every else (out, [])
    pictures = latents_to_pictures(decoder, vqgan, x)
    if every:
        return pictures, [latents_to_pictures(decoder, vqgan, f) for f in frames]
    return pictures


def latents_to_pictures(decoder, vqgan, x: torch.Tensor) -> torch.Tensor:
    """Return pictures (N, 3, H, W) in [0, 1] of standardised latents x: un-standardised,
    snapped to the VQGAN's codebook, decoded."""
    dev = next(vqgan.parameters()).device
    z = decoder.unstandardise(x.to(decoder.mean.device)).to(dev)
    return from_model_range(vqgan.decode(vqgan.vector_quantize(z))).cpu()


# ---------------------------------------------------------------------------------------------
# The whole pipeline, and the paper's comparison
# ---------------------------------------------------------------------------------------------


@dataclass
class UnCLIP:
    """The four parts of unCLIP: the CLIP (model, preprocess, tokenizer), the prior, the decoder
    and the VQGAN that turns latents into pictures (`tiny_generators.get_unclip()` gives the course's)."""

    clip: tuple
    prior: VectorDenoiser
    decoder: LatentDecoder
    vqgan: nn.Module


def generate(
    unclip: UnCLIP,
    captions: str | Sequence[str],
    n: int = 1,
    seed: int = 0,
    guidance: float = DECODER_SAMPLING["guidance"],
) -> torch.Tensor:
    """Return pictures (len(captions), n, 3, 32, 32): caption -> text embedding -> prior ->
    image embedding -> decoder -> VQGAN, n per caption."""
    captions = [captions] if isinstance(captions, str) else list(captions)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    check_guidance(guidance)
    text = text_embeddings(unclip.clip, captions).repeat_interleave(n, dim=0)
    image = sample_prior(unclip.prior, text, seed=seed)
    pictures = decode(unclip.decoder, unclip.vqgan, image, guidance=guidance, seed=seed)
    return pictures.view(len(captions), n, *pictures.shape[1:])


WAYS = ("oracle", "prior", "text", "zero")
WAY_NAMES = {
    "oracle": "true image embedding (oracle)",
    "prior": "prior's image embedding",
    "text": "text embedding, direct",
    "zero": "zero embedding",
    "ceiling": "VQGAN reconstruction (ceiling)",  # of the render the oracle embeds
}


def oracle_renders(
    clip, pairs: Sequence[tuple[str, str]], n: int, seed: int = 0, best_of: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the oracle's renders, n per pair, pair by pair ((len(pairs) * n, 3, H, W)), and
    their normalised CLIP image embeddings ((len(pairs) * n, D)): each picture the one of
    `best_of` renders of its pair (`pair_renders`) closest to the caption's text embedding.
    That is the choice `sample_prior` makes among its draws (`PRIOR_SAMPLING["best_of"]`, the
    default), so the oracle and the prior differ in where their embedding comes from, not in
    being chosen (docs/unclip-recipe.md, "The oracle, chosen as the prior is")."""
    best_of = PRIOR_SAMPLING["best_of"] if best_of is None else best_of
    if best_of < 1 or n < 1:
        raise ValueError(f"n and best_of must be >= 1, got {n}, {best_of}")
    drawn = pair_renders(pairs, n * best_of, seed)
    text = text_embeddings(clip, [judge.benchmark_prompt(s, c) for s, c in pairs])
    model, _, _ = clip
    image = encode_images(model, None, drawn, progress=False)
    best = (image.view(len(pairs), best_of, n, -1) * text[:, None, None]).sum(-1).argmax(1)
    rows = (torch.arange(len(pairs))[:, None] * best_of + best) * n + torch.arange(n)
    return drawn[rows.flatten()], image[rows.flatten()]


def condition_embeddings(
    unclip: UnCLIP,
    pairs: Sequence[tuple[str, str]],
    n: int,
    seed: int = 0,
    oracle: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Return what the decoder is fed for n pictures of each pair, way by way (WAYS): the
    image embedding of a render of the pair (oracle; `oracle`, else `oracle_renders(unclip.clip,
    pairs, n, seed + 1)`'s), the prior's, the caption's text embedding itself, zeros. Each
    (len(pairs) * n, D), pair by pair."""
    if oracle is None:
        _, oracle = oracle_renders(unclip.clip, pairs, n, seed + 1)
    captions = [judge.benchmark_prompt(s, c) for s, c in pairs]
    text = text_embeddings(unclip.clip, captions).repeat_interleave(n, dim=0)
    return {
        "oracle": oracle,
        "prior": sample_prior(unclip.prior, text, seed=seed),
        "text": text,
        "zero": torch.zeros_like(text),
    }


def evaluate_unclip(
    unclip: UnCLIP,
    judges,
    pairs: Sequence[tuple[str, str]] | None = None,
    n: int = 4,
    seed: int = 0,
    ways: Sequence[str] = WAYS,
    guidance: float = DECODER_SAMPLING["guidance"],
) -> dict:
    """Return the judges' verdicts on n pictures per benchmark pair for each way of feeding the
    decoder (WAYS), {way: {judge: {"seen", "heldout", "all"}}}, plus "pictures" {way: (pairs,
    n, 3, H, W)}, "pairs" and "n". `judges` = (judge CLIP, classifier), as `tiny_models.get_judges()` gives.

    "ceiling" is judged too: the VQGAN's own reconstructions of the renders the oracle embeds,
    as a decoder that drew those renders' latents exactly would be judged (the oracle's
    ceiling: the decoder draws through the VQGAN)."""
    unknown = [w for w in ways if w not in WAYS]
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if unknown:
        raise ValueError(f"unknown ways {unknown}; choose from {list(WAYS)}")
    pairs = [tuple(p) for p in (pairs if pairs is not None else judge.benchmark_pairs())]
    targets = [p for p in pairs for _ in range(n)]
    renders, oracle = oracle_renders(unclip.clip, pairs, n, seed + 1)  # and the ceiling's
    conditions = condition_embeddings(unclip, pairs, n, seed, oracle)
    result = {"pairs": pairs, "n": n, "pictures": {}}
    drawn = {
        way: decode(unclip.decoder, unclip.vqgan, conditions[way], guidance=guidance, seed=seed)
        for way in ways
    }
    drawn["ceiling"] = reconstruct(unclip.vqgan, renders)
    for way, pictures in drawn.items():
        verdicts = judge.judge(pictures, targets, *judges)
        result[way] = {
            name: judge.fractions_by_split(v["correct"], targets) for name, v in verdicts.items()
        }
        result["pictures"][way] = pictures.view(len(pairs), n, *pictures.shape[1:])
    return result


def prior_cosines(
    unclip: UnCLIP, pairs: Sequence[tuple[str, str]] | None = None, n: int = 4, seed: int = 0
) -> dict[str, float]:
    """Return how close the prior's image embeddings are to real ones: the mean cosine to the
    image embedding of a render of the caption's pair ("true"), to a render of the previous pair
    in `pairs` ("unrelated"; in the benchmark's order a neighbour may share the shape or the
    colour), and between renders of those same two pairs ("chance", the level of "unrelated"
    for an embedding that knows nothing of the caption)."""
    pairs = [tuple(p) for p in (pairs if pairs is not None else judge.benchmark_pairs())]
    if len(pairs) < 2:
        raise ValueError("prior_cosines needs at least 2 pairs")
    conditions = condition_embeddings(unclip, pairs, n, seed)
    prior, true = conditions["prior"], conditions["oracle"]
    other = true.roll(n, dims=0)  # the previous pair's renders: another pair for every row
    return {
        "true": (prior * true).sum(-1).mean().item(),
        "unrelated": (prior * other).sum(-1).mean().item(),
        "chance": (true * other).sum(-1).mean().item(),
    }


def variations(unclip: UnCLIP, picture: torch.Tensor, n: int = 8, seed: int = 0) -> torch.Tensor:
    """Return n pictures (n, 3, 32, 32) decoded from one picture's CLIP image embedding, each
    from other noise: what the embedding keeps (shape, colour) and what it leaves free."""
    if picture.ndim == 3:
        picture = picture[None]
    if picture.shape[0] != 1:
        raise ValueError(f"give one picture (3, H, W), got {tuple(picture.shape)}")
    model, _, _ = unclip.clip
    embedding = encode_images(model, None, picture, progress=False)
    return decode(unclip.decoder, unclip.vqgan, embedding.repeat(n, 1), seed=seed)


# ---------------------------------------------------------------------------------------------
# Attribute binding (the paper's Sec. 7): does the CLIP embedding know which colour is whose?
# ---------------------------------------------------------------------------------------------


def colour_swapped(scene: toyworld.Scene) -> tuple[toyworld.Scene, str]:
    """Return a two-object scene with its objects' colours exchanged (same shapes, same places),
    and its caption: "a blue circle left of a red square" for "a red circle left of a blue
    square". The same words in the caption; another picture."""
    if scene.kind != "pair":
        raise ValueError(f"only a two-object scene has colours to swap, not a {scene.kind!r} one")
    a, b = scene.objects
    a2, b2 = replace(a, colour=b.colour), replace(b, colour=a.colour)
    caption = (
        f"{toyworld.article(a2.colour)} {a2.shape} {scene.relation} "
        f"{toyworld.article(b2.colour)} {b2.shape}"
    )
    return replace(scene, objects=[a2, b2], caption=caption), caption


def binding(clip, n: int = 200, seed: int = 0) -> dict[str, float]:
    """Return how well `clip`'s embeddings bind colours to shapes, on n two-object scenes whose
    objects differ in shape and in colour, each beside its colour-swapped twin (every pair in
    both of them a seen one):

    - "twin_cosine": mean cosine between the image embeddings of a scene and its twin (what
      unCLIP's decoder is told apart by); "other_cosine": the same between a scene and
      another scene's picture, for scale;
    - "text_picks_picture": how often a caption's text embedding is closer to its own picture's
      image embedding than to the twin's (0.5 is chance: no binding at all);
    - "image_picks_caption": how often a picture is closer to its caption than to the twin's.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    seen = set(toyworld.allowed_pairs("heldout"))  # twins of seen pairs only: binding, not
    scenes, k = [], 0  # composition, is what is measured
    while len(scenes) < n:
        scene = toyworld.sample_scene(seed, k, "heldout", "pair")
        a, b = scene.objects
        if (
            a.shape != b.shape
            and a.colour != b.colour
            and {(a.shape, b.colour), (b.shape, a.colour)} <= seen
        ):
            scenes.append(scene)
        k += 1
    twins = [colour_swapped(s) for s in scenes]
    model, _, tokenizer = clip
    images = encode_images(model, None, render(scenes), progress=False)
    twin_images = encode_images(model, None, render([t for t, _ in twins]), progress=False)
    texts = encode_texts(model, tokenizer, [s.caption for s in scenes], progress=False)
    twin_texts = encode_texts(model, tokenizer, [c for _, c in twins], progress=False)
    return {
        "twin_cosine": (images * twin_images).sum(-1).mean().item(),
        "other_cosine": (images * images.roll(1, dims=0)).sum(-1).mean().item(),
        "text_picks_picture": ((texts * images).sum(-1) > (texts * twin_images).sum(-1))
        .float()
        .mean()
        .item(),
        "image_picks_caption": ((images * texts).sum(-1) > (images * twin_texts).sum(-1))
        .float()
        .mean()
        .item(),
    }
