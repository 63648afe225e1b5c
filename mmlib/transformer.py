"""The token transformer: one decoder-only transformer over a stream of [text tokens, image tokens]
(DALL-E's model, Ramesh et al. 2021), sampled token by token with a key/value cache.

Text arrives as the ids of a tokenizer (CLIP's BPE), mapped to a compact vocabulary of the ids
the model reads (`config.text_vocab`); image tokens are a VQGAN's codebook indices, read row by
row. The output at position p predicts the token at p + 1. The experiment around it (the shapes
world's captions, training, re-ranking, judging) is the lesson `mmlib.dalle`.

Shapes here: B batch, T sequence length, C model width, V vocabulary size.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmlib.env import get_device
from mmlib.store.checkpoints import load_weights, read_model_dir, save_model_dir, state_dict_cpu

CONFIG_KEY = "dalle_config"  # where mmlib.json keeps the TransformerConfig

# ---------------------------------------------------------------------------------------------
# Text tokens: a tokenizer's ids, mapped to the compact vocabulary the model reads
# ---------------------------------------------------------------------------------------------

PAD, UNK, SOT, EOT = 0, 1, 2, 3  # special ids of the compact text vocabulary
N_SPECIAL = 4


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
class TransformerConfig:
    """The model's size and vocabularies (saved with it, so loading rebuilds the same model)."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 96
    text_len: int = 16  # caption ids with SOT and EOT: room for the longest caption, and more
    grid: int = 8  # image tokens per side (tiny VQGAN: 32 px / 4)
    image_vocab: int = 256  # the VQGAN's codebook size
    text_vocab: tuple[int, ...] = ()  # the tokenizer ids the model reads (mmlib.dalle fills it)
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

    def __init__(self, config: TransformerConfig):
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

    def __init__(self, config: TransformerConfig):
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

    def __init__(self, config: TransformerConfig, tokenizer):
        super().__init__()
        if not config.text_vocab:
            raise ValueError(
                "config.text_vocab is empty: give the tokenizer ids of the words the model reads "
                "(for the shapes world, mmlib.dalle.new_model fills them in)"
            )
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


def next_token_loss(model: TokenTransformer, text: torch.Tensor, image: torch.Tensor) -> dict:
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


def next_token_probs(
    cond_logits: torch.Tensor,
    uncond_logits: torch.Tensor | None,
    guidance: float = 1.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """Return the distribution (B, V) the next token is drawn from, given its logits (B, V)
    with the caption and with the empty caption (unused, and may be None, at guidance 1).

    In this order: classifier-free guidance uncond + guidance * (cond - uncond) on the logits,
    divided by the temperature, cut to the top k, then to the top p, then the softmax.
    """
    logits = cond_logits
    if guidance != 1.0:
        logits = uncond_logits + guidance * (cond_logits - uncond_logits)
    return top_p_filter(top_k_filter(logits / temperature, top_k), top_p).softmax(dim=-1)


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
    prefix: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return sampled image tokens (len(captions) * n, 64): n per caption, caption-major.

    The 64 tokens are drawn one at a time in raster order, each from the model's distribution
    given the caption and the tokens before it (divided by `temperature`, cut by `top_k` and
    `top_p`). The same seed and batch_size give the same tokens. Since sampling only appends,
    `tokens[:, :j]` is the picture after j steps: `dalle.decode_partial` shows it.

    `guidance` > 1 is classifier-free guidance (later than DALL-E 1: GLIDE, Parti): logits
    uncond + guidance * (cond - uncond), with uncond the logits for the empty caption; it
    pushes samples towards what the caption changes. 1.0 is plain sampling.

    `prefix` (m,) or (len(captions) * n, m): the first m image tokens are given, not drawn,
    and the model finishes the picture (DALL-E's image completion: the top rows of a real
    picture, then the rest in the caption's spirit).
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
    if prefix is None:
        prefix = torch.empty(len(text), 0, dtype=torch.long)
    prefix = torch.as_tensor(prefix, dtype=torch.long)
    prefix = prefix.expand(len(text), -1) if prefix.ndim == 1 else prefix
    if prefix.shape[0] != len(text) or not 0 <= prefix.shape[1] < model.config.n_image:
        raise ValueError(
            f"prefix must be (m,) or ({len(text)}, m) image tokens with m < "
            f"{model.config.n_image}, got {tuple(prefix.shape)}"
        )
    if (
        prefix.numel()
        and not 0 <= int(prefix.min()) <= int(prefix.max()) < model.config.image_vocab
    ):
        raise ValueError(f"prefix tokens must lie in 0..{model.config.image_vocab - 1}")
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
        tokens = prefix[i : i + batch_size].to(dev)  # given; the rest is drawn
        _, logits = model(batch, tokens.repeat(len(batch) // b, 1), cache)  # for the next one
        for j in range(tokens.shape[1], model.config.n_image):
            logits = logits[:, -1]  # rows [:b] with the caption, [b:] (if guided) without
            probs = next_token_probs(logits[:b], logits[b:], guidance, temperature, top_k, top_p)
            nxt = torch.multinomial(probs, 1, generator=gen)
            tokens = torch.cat([tokens, nxt], dim=1)
            if j + 1 < model.config.n_image:  # one new token; the cache has the rest
                _, logits = model(None, nxt.repeat(len(batch) // b, 1), cache)
        out.append(tokens.cpu())
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------
# Saving and loading
# ---------------------------------------------------------------------------------------------


def save_transformer(
    folder: str | os.PathLike, model: TokenTransformer, info: dict | None = None
) -> Path:
    """Write the model atomically: model.safetensors + mmlib.json (its config and `info`)."""
    info = {**(info or {}), CONFIG_KEY: asdict(model.config)}
    return save_model_dir(folder, {"model.safetensors": state_dict_cpu(model)}, info)


def load_transformer(folder: str | os.PathLike, tokenizer, device=None) -> TokenTransformer:
    """Return the TokenTransformer saved in `folder` by `save_transformer`, in eval mode."""
    hint = "Save one with mmlib.transformer.save_transformer (or `mmlib train dalle`)."
    info = read_model_dir(folder, ("model.safetensors",), hint)
    if CONFIG_KEY not in info:
        raise ValueError(
            f"{str(folder)!r}: its mmlib.json has no {CONFIG_KEY!r}: not a token model"
        )
    model = TokenTransformer(TransformerConfig(**info[CONFIG_KEY]), tokenizer)
    model.load_state_dict(load_weights(Path(folder) / "model.safetensors", hint=hint))
    return model.to(get_device(device)).eval()
