"""What the course's models are: the tiny profile's recipe of every model it trains and every
result it caches, in one place.

A recipe is a model's architecture, how it is trained and how it is sampled. The values are the
defaults of each lesson's own config (`ClipTrainConfig`, `VQGANTrainConfig`, `DalleTrainConfig`,
...), where a comment says why each is what it is; this module names which of them make the
course's models, and `mmlib.tiny_models` and `mmlib.tiny_generators` make and cache each model
under a hash of its recipe. What the recipes measure is in the shipped spreads
(mmlib/data/spread/) and docs/*-recipe.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mmlib import dalle, dalle_training, generate, judge, unclip
from mmlib.contrastive import ClipTrainConfig
from mmlib.diffusion import DenoiserConfig, UNetConfig
from mmlib.transformer import TransformerConfig
from mmlib.unclip_training import DecoderTrainConfig, PriorTrainConfig
from mmlib.vqgan_training import TINY_VQGAN, VQGANTrainConfig

# ---------------------------------------------------------------------------------------------
# The tiny CLIPs
# ---------------------------------------------------------------------------------------------

# The tiny CLIPs read CLIP's own BPE tokens, with the first 8,192 of its 48,894 merges: every
# word of the shapes world is one token (a few plurals two), everyday words still tokenize (in
# more pieces), and the text embedding has 8,706 rows instead of 49,408, most of which no
# caption here would ever touch (they were most of the model's parameters; a model pack would
# mostly carry untrained rows). The vocabulary file travels inside each model folder.
TINY_BPE_MERGES = 8192
TINY_BPE_FILE = f"bpe_simple_vocab_{TINY_BPE_MERGES}.txt.gz"

# A small ModifiedResNet image tower (convolutions see small shapes better than 8x8 patches,
# at a fraction of a ViT's cost on a CPU) and a narrow 3-layer text transformer. The captions
# are at most 12 tokens with SOT and EOT, so the context is 12. Composition (held-out pairs)
# breaks in the image tower (zeroshot.shape_probe), so the text tower is kept small and the
# image tower gets the steps it saves (docs/clip-recipe.md: what was measured).
TINY_CLIP_CONFIG: dict = {
    "model_cfg": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16},
        "text_cfg": {
            "context_length": 12,
            "vocab_size": 256 + 256 + TINY_BPE_MERGES + 2,  # bytes, bytes</w>, merges, SOT/EOT
            "width": 64,
            "heads": 4,
            "layers": 3,
            "tokenizer_kwargs": {"bpe_path": TINY_BPE_FILE},  # relative to the model folder
        },
    },
    "preprocess_cfg": {
        "size": 32,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "interpolation": "bilinear",
        "resize_mode": "shortest",
    },
}

# How the tiny CLIPs are trained: ClipTrainConfig's defaults are the course's recipe (one place
# to change it: mmlib/contrastive.py; docs/clip-recipe.md says why), as a dict that experiments
# and tests can patch. Each tiny CLIP then sets its own seed and split.
TINY_CLIP_TRAINING: dict = asdict(ClipTrainConfig())


@dataclass(frozen=True)
class TinyClipSpec:
    """How one tiny CLIP of the zoo is made."""

    seed: int
    split: str  # which shapes-world split it trains on
    purpose: str


TINY_MODELS: dict[str, TinyClipSpec] = {
    "tiny-clip": TinyClipSpec(seed=0, split="heldout", purpose="the course's CLIP"),
    "judge-clip": TinyClipSpec(
        seed=1, split="all", purpose="judges generated images (other seed, all pairs)"
    ),
    "tiny-clip-b": TinyClipSpec(
        seed=2, split="heldout", purpose="a second course CLIP: VQGAN+CLIP ensembles the two"
    ),
}


def tiny_train_config(name: str) -> ClipTrainConfig:
    """Return the ClipTrainConfig that makes the tiny CLIP `name`."""
    if name not in TINY_MODELS:
        raise ValueError(f"name={name!r} is not a tiny model; known: {list(TINY_MODELS)}")
    spec = TINY_MODELS[name]
    return ClipTrainConfig(**{**TINY_CLIP_TRAINING, "seed": spec.seed, "split": spec.split})


# ---------------------------------------------------------------------------------------------
# The tiny VQGAN and the judges' classifier
# ---------------------------------------------------------------------------------------------

VQGAN_CONFIG = TINY_VQGAN  # f = 4 on 32 px pictures: 8 x 8 tokens from 256 codes


def vqgan_training() -> VQGANTrainConfig:
    """Return how the tiny VQGAN is trained (VQGANTrainConfig's defaults)."""
    return VQGANTrainConfig()


def classifier_training() -> judge.ClassifierTrainConfig:
    """Return how the judges' shape/colour classifier is trained."""
    return judge.ClassifierTrainConfig()


# ---------------------------------------------------------------------------------------------
# VQGAN+CLIP
# ---------------------------------------------------------------------------------------------

VQGAN_CLIP_BEST_OF = 2  # the benchmark keeps the better of 2 starts, chosen by the tiny CLIPs


def generation_settings(profile: str) -> dict:
    """Return the GenerateConfig fields of a profile ("tiny" or "full").

    tiny: 32 px, cutn 16, GenerateConfig's steps, the other defaults (tuned on the benchmark
    prompts, notebook 05; `mmlib bench generate` measures them: mmlib/data/spread/generate.json).
    full: 256 px, cutn 32, 300 steps, crops from half the picture up, no smoothness prior (the
    settings of the original VQGAN+CLIP notebooks; untuned here: no real weights on this machine).
    """
    if profile == "full":
        return {"size": 256, "cutn": 32, "steps": 300, "cut_min": 0.5, "smoothness": 0.0}
    if profile != "tiny":
        raise ValueError(f"profile={profile!r}; choose 'tiny' or 'full'")
    return {"size": 32, "cutn": 16, "steps": generate.GenerateConfig.steps}


# ---------------------------------------------------------------------------------------------
# The DALL-E-style token model
# ---------------------------------------------------------------------------------------------


def token_model() -> TransformerConfig:
    """Return the token transformer's architecture."""
    return TransformerConfig()


def token_model_training() -> dalle_training.DalleTrainConfig:
    """Return how the token transformer is trained (and on which world)."""
    return dalle_training.DalleTrainConfig()


TOKEN_SAMPLING = dalle.SAMPLING  # how the course samples it: guidance, top-k, temperature


# ---------------------------------------------------------------------------------------------
# unCLIP: the prior and the diffusion decoder
# ---------------------------------------------------------------------------------------------

UNCLIP_CLIP = "tiny-clip"  # the CLIP whose embeddings unCLIP's two models read and write
UNCLIP_MODELS = ("unclip-prior", "unclip-decoder")
PRIOR_SAMPLING = unclip.PRIOR_SAMPLING
DECODER_SAMPLING = unclip.DECODER_SAMPLING


def unclip_network(name: str) -> DenoiserConfig | UNetConfig:
    """Return the network of unCLIP's model `name` ("unclip-prior" or "unclip-decoder"), sized
    to the course's CLIP embedding and the tiny VQGAN's latents."""
    embed_dim = TINY_CLIP_CONFIG["model_cfg"]["embed_dim"]
    if name == "unclip-prior":
        return DenoiserConfig(dim=embed_dim)
    if name == "unclip-decoder":
        return UNetConfig(channels=VQGAN_CONFIG["embed_dim"], cond_dim=embed_dim)
    raise ValueError(f"name={name!r}; choose from {list(UNCLIP_MODELS)}")


def unclip_train_config(name: str) -> PriorTrainConfig | DecoderTrainConfig:
    """Return how unCLIP's model `name` is trained."""
    if name == "unclip-prior":
        return PriorTrainConfig()
    if name == "unclip-decoder":
        return DecoderTrainConfig()
    raise ValueError(f"name={name!r}; choose from {list(UNCLIP_MODELS)}")
