"""DALL-E style generation: one transformer reads a caption and writes a picture, token by token.

DALL-E (Ramesh et al., 2021) turns a picture into a grid of codebook indices (a dVAE; here the
tiny VQGAN: 8 x 8 = 64 tokens from 256 codes), appends them to the caption's text tokens, and
trains a decoder-only transformer to predict every next token of [text tokens, image tokens].
To draw, it is given a caption and samples the 64 image tokens one at a time; the VQGAN decodes
them. DALL-E drew 512 pictures per caption and kept the ones CLIP liked best: `rerank`.

Shapes here: B batch, T sequence length, C model width, V vocabulary size.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmlib import toyworld
from mmlib.training import (
    History,
    check_finite,
    checkpoint_exists,
    cosine_lr,
    load_checkpoint,
    progress_bar,
    save_checkpoint,
)
from mmlib.vqgan import from_model_range, to_model_range

# ---------------------------------------------------------------------------------------------
# Text tokens: CLIP's BPE, mapped to the few ids the shapes world uses
# ---------------------------------------------------------------------------------------------

PAD, UNK, SOT, EOT = 0, 1, 2, 3  # special ids of the compact text vocabulary
N_SPECIAL = 4

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
    words |= {s for shape in toyworld.SHAPES for s in (shape, toyworld._plural(shape))}
    return sorted(words)


def build_text_vocab(tokenizer) -> tuple[int, ...]:
    """Return the sorted CLIP BPE ids of every grammar word: the compact text vocabulary.

    DALL-E had a 16,384-token BPE vocabulary; the shapes world needs a few dozen of CLIP's
    49,408 ids, so the text embedding and text head stay small. Other words map to UNK.
    """
    return tuple(sorted({i for word in grammar_words() for i in tokenizer.encode(word)}))


def caption_ids(
    captions: Sequence[str], text_vocab: Sequence[int], tokenizer, text_len: int
) -> torch.Tensor:
    """Return captions as compact ids (B, text_len): [SOT, words..., EOT, PAD, ...].

    Words outside the shapes world still tokenize (CLIP's BPE) and become UNK. A caption longer
    than the context is cut, with a warning saying how many tokens were dropped.
    """
    lookup = {bpe: N_SPECIAL + k for k, bpe in enumerate(text_vocab)}
    room = text_len - 2  # SOT and EOT take two places
    rows, cut = [], []
    for caption in captions:
        ids = [lookup.get(bpe, UNK) for bpe in tokenizer.encode(caption)]
        if len(ids) > room:
            cut.append((caption, len(ids) - room))
            ids = ids[:room]
        rows.append([SOT, *ids, EOT] + [PAD] * (room - len(ids)))
    if cut:
        warnings.warn(
            f"{len(cut)} caption(s) longer than the text context ({room} tokens) were truncated, "
            f"{sum(n for _, n in cut)} token(s) dropped in all; e.g. {cut[0][0]!r} lost its last "
            f"{cut[0][1]} token(s). Use shorter captions or a model with a larger text_len.",
            stacklevel=2,
        )
    return torch.tensor(rows, dtype=torch.long)


def empty_caption(text_len: int) -> torch.Tensor:
    """Return the ids of the empty caption [SOT, EOT, PAD, ...] (text_len,)."""
    return torch.tensor([SOT, EOT] + [PAD] * (text_len - 2))


def caption_text(ids: torch.Tensor, text_vocab: Sequence[int], tokenizer) -> list[str]:
    """Return the captions of compact text ids (B, text_len); UNK reads as "<unk>"."""
    out = []
    for row in ids.tolist():
        words, bpe = [], []
        for i in [*row, UNK]:  # a final UNK flushes the last words
            if i >= N_SPECIAL:
                bpe.append(text_vocab[i - N_SPECIAL])
            elif i == UNK:
                words += [tokenizer.decode(bpe).strip(), "<unk>"] if bpe else ["<unk>"]
                bpe = []
        out.append(" ".join(w for w in words[:-1] if w))
    return out


# ---------------------------------------------------------------------------------------------
# The model: a small GPT over [text tokens, image tokens]
# ---------------------------------------------------------------------------------------------


@dataclass
class DalleConfig:
    """The model's size and vocabularies (saved with it, so loading rebuilds the same model)."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 96
    text_len: int = 16  # the tiny CLIP's context length
    grid: int = 8  # image tokens per side (tiny VQGAN: 32 px / 4)
    image_vocab: int = 256  # the VQGAN's codebook size
    text_vocab: tuple[int, ...] = ()  # CLIP BPE ids kept; () = build_text_vocab(tokenizer)
    dropout: float = 0.0
    text_loss_weight: float = 1 / 8  # DALL-E weighs the text loss 1/8 and the image loss 7/8
    image_loss_weight: float = 7 / 8

    def __post_init__(self):
        self.text_vocab = tuple(int(i) for i in self.text_vocab)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")

    @property
    def n_image(self) -> int:
        return self.grid * self.grid

    @property
    def n_text_vocab(self) -> int:
        return N_SPECIAL + len(self.text_vocab)


def attention_mask(n_text: int, n_image: int) -> torch.Tensor:
    """Return the (T, T) boolean causal mask of a [text, image] sequence: True = may attend.

    Every token sees the whole caption before it and the image tokens above and left of it
    (in raster order), never a later one. DALL-E used this plus sparse patterns (row, column,
    convolutional) in some layers; with 64 image tokens full causal attention is cheap.
    """
    n = n_text + n_image
    return torch.ones(n, n, dtype=torch.bool).tril()


class SelfAttention(nn.Module):
    """Multi-head causal self-attention, with an optional key/value cache for sampling."""

    def __init__(self, config: DalleConfig):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (
            t.view(B, T, self.n_head, -1).transpose(1, 2) for t in self.qkv(x).split(C, dim=2)
        )
        if cache is not None:  # sampling: keys and values of earlier tokens are kept, not redone
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        if T > 1 and k.shape[2] != T:
            raise ValueError("with a cache, feed the first tokens together, then one at a time")
        # is_causal applies attention_mask(); one new token may see every cached one
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=T > 1, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    """A pre-norm transformer block: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, config: DalleConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(config.n_embd), nn.LayerNorm(config.n_embd)
        self.attn = SelfAttention(config)
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, 4 * config.n_embd),
            nn.GELU(),
            nn.Linear(4 * config.n_embd, config.n_embd),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache)
        return x + self.mlp(self.ln2(x))


class TokenTransformer(nn.Module):
    """A decoder-only transformer over [caption tokens (text_len), image tokens (grid x grid)].

    Text and image tokens have their own embeddings and their own output heads; text tokens
    get a position embedding, image tokens a row plus a column embedding (as DALL-E).
    The output at position p predicts the token at p + 1.
    """

    def __init__(self, config: DalleConfig | None = None, tokenizer=None):
        super().__init__()
        if tokenizer is None:
            from mmlib.zoo import tiny_tokenizer

            tokenizer = tiny_tokenizer()
        config = config or DalleConfig()
        if not config.text_vocab:
            config = replace(config, text_vocab=build_text_vocab(tokenizer))
        self.config, self.tokenizer = config, tokenizer
        C = config.n_embd
        self.text_emb = nn.Embedding(config.n_text_vocab, C)
        self.image_emb = nn.Embedding(config.image_vocab, C)
        self.text_pos = nn.Embedding(config.text_len, C)
        self.row_emb, self.col_emb = nn.Embedding(config.grid, C), nn.Embedding(config.grid, C)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(C)
        self.text_head = nn.Linear(C, config.n_text_vocab, bias=False)
        self.image_head = nn.Linear(C, config.image_vocab, bias=False)
        self.apply(_init_weights)

    def encode_captions(self, captions: Sequence[str]) -> torch.Tensor:
        """Return the captions as this model's compact text ids (B, text_len)."""
        c = self.config
        return caption_ids(captions, c.text_vocab, self.tokenizer, c.text_len)

    def decode_captions(self, ids: torch.Tensor) -> list[str]:
        """Return the captions of compact text ids (B, text_len)."""
        return caption_text(ids, self.config.text_vocab, self.tokenizer)

    def new_cache(self) -> list[dict]:
        """Return an empty key/value cache (one dict per layer) for `forward(..., cache=)`."""
        return [{} for _ in self.blocks]

    def forward(
        self, text: torch.Tensor | None, image: torch.Tensor, cache: list[dict] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (text logits, image logits) for the tokens [text, image] that follow `cache`.

        Without a cache, `text` is (B, text_len) and `image` the first m image tokens (B, m):
        text logits (B, text_len - 1, Vt) predict text tokens 1.., image logits (B, m + 1, Vi)
        predict image tokens 0..m. With a cache, pass only the new tokens.
        """
        c = self.config
        start = cache[0]["k"].shape[2] if cache and "k" in cache[0] else 0
        parts = []
        if text is not None:
            pos = torch.arange(start, start + text.shape[1], device=image.device)
            parts.append(self.text_emb(text) + self.text_pos(pos))
            start_image = 0
        else:
            start_image = start - c.text_len
        where = torch.arange(start_image, start_image + image.shape[1], device=image.device)
        parts.append(
            self.image_emb(image) + self.row_emb(where // c.grid) + self.col_emb(where % c.grid)
        )
        x = torch.cat(parts, dim=1)
        for k, block in enumerate(self.blocks):
            x = block(x, cache[k] if cache is not None else None)
        x = self.ln_f(x)
        n_text_out = max(0, min(start + x.shape[1], c.text_len - 1) - start)
        return self.text_head(x[:, :n_text_out]), self.image_head(x[:, n_text_out:])


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):  # GPT-2's initialisation
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def dalle_loss(model: TokenTransformer, text: torch.Tensor, image: torch.Tensor) -> dict:
    """Return {"loss", "text", "image"}: the weighted next-token cross-entropies of a batch.

    `text` (B, text_len) compact ids, `image` (B, 64) codebook indices. Padding is not
    predicted; the text loss keeps the model a language model of the captions (as DALL-E).
    """
    text_logits, image_logits = model(text, image[:, :-1])
    text_loss = F.cross_entropy(text_logits.flatten(0, 1), text[:, 1:].flatten(), ignore_index=PAD)
    image_loss = F.cross_entropy(image_logits.flatten(0, 1), image.flatten())
    c = model.config
    loss = c.text_loss_weight * text_loss + c.image_loss_weight * image_loss
    return {"loss": loss, "text": text_loss, "image": image_loss}


# ---------------------------------------------------------------------------------------------
# Data: captions and token grids of shapes-world scenes
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def image_tokens(vqgan, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Return the VQGAN token grid of images (N, 3, H, W) in [0, 1], flattened: (N, h * w)."""
    vqgan.eval()
    dev = next(vqgan.parameters()).device
    out = [
        vqgan.encode(to_model_range(images[i : i + batch_size].to(dev)))[1].flatten(1).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out)


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
    from tqdm.auto import tqdm

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
    for i in tqdm(range(0, n, 1024), desc="encode scenes", disable=not progress, leave=False):
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
    config: DalleConfig | None = None,
    train_config: DalleTrainConfig | None = None,
    vqgan=None,
    tokenizer=None,
    progress: bool = True,
    folder: str | Path | None = None,
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
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
    torch.manual_seed(tc.seed)
    model = TokenTransformer(config, tokenizer).train()
    tick = time.perf_counter()
    text, image = (
        data
        if data is not None
        else scene_data(
            model, vqgan, tc.n_scenes, tc.seed, tc.split, progress, tc.object_size, tc.background
        )
    )
    data_seconds = time.perf_counter() - tick
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tc.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=tc.lr,
        betas=(0.9, 0.95),
    )
    saved = json.loads(json.dumps({"model": asdict(model.config), "train": asdict(tc)}))
    start, history = 0, History()
    if folder is not None and checkpoint_exists(folder):
        start, history = load_checkpoint(folder, model, optimizer, saved)
    gen = torch.Generator().manual_seed(tc.seed)
    seconds = history.last("seconds", 0.0)
    bar = progress_bar(start, tc.steps, "train DALL-E", progress)
    for step in bar:
        tick = time.perf_counter()
        # batch `step` is the same whether or not the run was resumed
        rows = torch.randint(len(text), (tc.batch_size,), generator=gen.manual_seed(tc.seed + step))
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, tc.steps, tc.warmup, tc.lr, min_ratio=0.05)
        text_batch = text[rows].clone()
        drop = torch.rand(tc.batch_size, generator=gen) < tc.p_uncond
        text_batch[drop] = empty_caption(model.config.text_len)
        losses = dalle_loss(model, text_batch, image[rows])
        check_finite(losses["loss"], step, folder)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        seconds += time.perf_counter() - tick
        done = step + 1
        if step % tc.log_every == 0 or done == tc.steps:
            history.log(
                step,
                loss=losses["loss"],
                text_loss=losses["text"],
                image_loss=losses["image"],
                lr=optimizer.param_groups[0]["lr"],
                seconds=seconds,
                data_seconds=data_seconds,
            )
            bar.set_postfix(
                image=f"{losses['image'].item():.3f}", text=f"{losses['text'].item():.3f}"
            )
        if folder is not None and (done % tc.checkpoint_every == 0 or done == tc.steps):
            save_checkpoint(folder, model, optimizer, done, saved, history)
    bar.close()
    return model.eval(), history


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Return logits with all but the k largest of each row set to -inf (None: unchanged)."""
    if k is None or k >= logits.shape[-1]:
        return logits
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float | None) -> torch.Tensor:
    """Return logits keeping, per row, the fewest most likely tokens whose probability sums to
    at least p (nucleus sampling); the others are set to -inf (None: unchanged)."""
    if p is None or p >= 1.0:
        return logits
    if not 0.0 < p:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    before = sorted_logits.softmax(dim=-1).cumsum(dim=-1) - sorted_logits.softmax(dim=-1)
    drop_sorted = before >= p  # the probability before this token already reaches p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


@torch.no_grad()
def sample(
    model: TokenTransformer,
    captions: str | Sequence[str],
    n: int = 1,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    batch_size: int = 128,
    guidance: float = 1.0,
    progress: bool = False,
) -> torch.Tensor:
    """Return sampled image tokens (len(captions) * n, 64): n per caption, caption-major.

    The 64 tokens are drawn one at a time in raster order, each from the model's distribution
    given the caption and the tokens before it (divided by `temperature`, cut by `top_k` and
    `top_p`). The same seed and batch_size give the same tokens. Since sampling only appends,
    `tokens[:, :j]` is the picture after j steps: `decode_partial` shows it.

    `guidance` > 1 is classifier-free guidance (later than DALL-E 1: GLIDE, Parti): logits
    uncond + guidance * (cond - uncond), with uncond the logits for the empty caption; it
    pushes samples towards what the caption changes. 1.0 is plain sampling.
    """
    from tqdm.auto import tqdm

    captions = [captions] if isinstance(captions, str) else list(captions)
    if not captions or n < 1:
        raise ValueError(
            f"sample needs at least one caption and n >= 1, got {len(captions)} "
            f"caption(s) and n={n}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    model.eval()
    dev = next(model.parameters()).device
    text = model.encode_captions(captions).repeat_interleave(n, dim=0)
    gen = torch.Generator(device=dev).manual_seed(seed)
    out = []
    for i in tqdm(
        range(0, len(text), batch_size), desc="sample", disable=not progress, leave=False
    ):
        batch = text[i : i + batch_size].to(dev)
        b = len(batch)
        if guidance != 1.0:  # the same pictures also drawn for the empty caption
            batch = torch.cat([batch, empty_caption(batch.shape[1]).to(dev).expand(b, -1)])
        cache = model.new_cache()
        tokens = torch.empty(b, 0, dtype=torch.long, device=dev)
        _, logits = model(batch, tokens.repeat(len(batch) // b, 1), cache)  # logits for token 0
        for j in range(model.config.n_image):
            logits = logits[:, -1]
            if guidance != 1.0:
                logits = logits[b:] + guidance * (logits[:b] - logits[b:])
            logits = top_p_filter(top_k_filter(logits / temperature, top_k), top_p)
            nxt = torch.multinomial(logits.softmax(dim=-1), 1, generator=gen)
            tokens = torch.cat([tokens, nxt], dim=1)
            if j + 1 < model.config.n_image:  # one new token; the cache has the rest
                _, logits = model(None, nxt.repeat(len(batch) // b, 1), cache)
        out.append(tokens.cpu())
    return torch.cat(out)


@torch.no_grad()
def decode_tokens(vqgan, tokens: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Return pictures (B, 3, H, W) in [0, 1] from image tokens (B, h * w) (a square grid)."""
    side = int(round(tokens.shape[1] ** 0.5))
    if side * side != tokens.shape[1]:
        raise ValueError(f"{tokens.shape[1]} tokens do not make a square grid")
    dev = next(vqgan.parameters()).device
    grids = tokens.view(-1, side, side)
    out = [
        from_model_range(vqgan.decode_indices(grids[i : i + batch_size].to(dev))).cpu()
        for i in range(0, len(grids), batch_size)
    ]
    return torch.cat(out)


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
    summed (`generate.clip_scores`, as VQGAN+CLIP's ensemble).
    """
    from mmlib.generate import as_clips, clip_scores

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


def generate(
    model: TokenTransformer,
    vqgan,
    captions: str | Sequence[str],
    clips=None,
    n: int = 8,
    keep: int = 1,
    **sampling,
) -> torch.Tensor:
    """Return pictures (len(captions), keep, 3, H, W): n samples per caption, the `keep` best by
    CLIP (`clips`: one or several (model, preprocess, tokenizer)); without, the first `keep`.

    `sampling`: keyword arguments of `sample`; none given means SAMPLING.
    """
    captions = [captions] if isinstance(captions, str) else list(captions)
    images = decode_tokens(vqgan, sample(model, captions, n=n, **(sampling or SAMPLING)))
    images = images.view(len(captions), n, *images.shape[1:])
    if clips is None:
        return images[:, :keep]
    return torch.stack(
        [rerank(im, c, clips, keep)[0] for im, c in zip(images, captions, strict=True)]
    )


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
    fraction in steps of 8%, so the course measures 4 draws (BENCHMARK_DRAWS).

    `clips` re-rank: one CLIP or several (the course's two, `zoo.get_generation_clips`);
    `judges` = (judge CLIP, classifier) as `zoo.get_judges()` gives. For each judge and each
    way ("first": one sample per pair, "all": every sample, "reranked": the CLIPs' best of n,
    and with several CLIPs "reranked_one": the first CLIP's best of n) the fraction judged
    correct on seen, held-out and all pairs; also samples per second (sampling and decoding
    only); "reranked_by_draw": the "reranked" fractions of each draw; "pairs" (draws x pairs),
    the pictures (draws x pairs, n, 3, H, W) and "best", the re-ranked ones (draws x pairs, 3,
    H, W). `sampling`: keyword arguments of `sample`
    (default SAMPLING).
    """
    from mmlib import judge
    from mmlib.generate import as_clips

    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    one_draw = list(pairs) if pairs is not None else judge.benchmark_pairs()
    pairs = one_draw * draws
    captions = [judge.benchmark_prompt(s, c) for s, c in pairs]
    tick = time.perf_counter()
    images = decode_tokens(vqgan, sample(model, captions, n=n, seed=seed, **(sampling or SAMPLING)))
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


# ---------------------------------------------------------------------------------------------
# Saving and loading
# ---------------------------------------------------------------------------------------------


def save_dalle(folder: str | Path, model: TokenTransformer, info: dict | None = None) -> Path:
    """Write the model atomically: model.safetensors + mmlib.json (its DalleConfig and `info`)."""
    from mmlib.zoo import save_model_dir

    return save_model_dir(
        Path(folder), model, {**(info or {}), "dalle_config": asdict(model.config)}
    )


def load_dalle(folder: str | Path, device=None, tokenizer=None) -> TokenTransformer:
    """Return the TokenTransformer saved in `folder` by `save_dalle`, in eval mode."""
    from safetensors.torch import load_file

    from mmlib.env import get_device

    folder = Path(folder)
    if not (folder / "mmlib.json").is_file() or not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"no DALL-E model in {str(folder)!r} (want mmlib.json and "
            f"model.safetensors, as save_dalle writes)"
        )
    info = json.loads((folder / "mmlib.json").read_text())
    if "dalle_config" not in info:
        raise ValueError(
            f"{str(folder / 'mmlib.json')!r} has no 'dalle_config': not a DALL-E model"
        )
    model = TokenTransformer(DalleConfig(**info["dalle_config"]), tokenizer)
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.to(get_device(device)).eval()


def train_dalle_command(args) -> Path:
    """`mmlib train dalle`: train the token transformer on the tiny VQGAN's tokens; checkpoints
    in OUT/checkpoint (a re-run resumes), the model in OUT/model; prints the judges' verdicts."""
    from mmlib import zoo

    world = {"object_size": None, "background": "gradient"} if args.full_world else {}
    train_config = DalleTrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        n_scenes=args.scenes,
        **world,
    )
    vqgan = zoo.get_vqgan("tiny", device="cpu")
    out = Path(args.out)
    model, history = train_dalle(
        DalleConfig(), train_config, vqgan, zoo.tiny_tokenizer(), folder=out / "checkpoint"
    )
    save_dalle(out / "model", model, {"history": history.records, "training": asdict(train_config)})
    ev = evaluate_dalle(
        model,
        vqgan,
        zoo.get_generation_clips("tiny", device="cpu"),
        zoo.get_judges(),
        draws=BENCHMARK_DRAWS,
        **SAMPLING,
    )
    ways = {
        "first": "first sample",
        "reranked_one": "best of 8 by the tiny CLIP",
        "reranked": "best of 8 by both CLIPs",
    }
    for way, label in ways.items():
        print(
            f"{label:26}: "
            + ", ".join(
                f"{name} seen {v['seen']:.0%} held-out {v['heldout']:.0%}"
                for name, v in ev[way].items()
            )
        )
    print(f"{history.last('seconds'):.0f} s of training; model in {out / 'model'}")
    return out / "model"
