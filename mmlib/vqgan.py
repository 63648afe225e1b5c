"""VQGAN: an encoder turns an image into a grid of vectors, each snapped to the nearest entry of a
learned codebook (a "visual word"); a decoder turns the grid back into an image.

Built from taming-transformers' `Encoder`, `Decoder` and patch discriminator modules only: its
`taming.models` and `taming.main` import a pytorch-lightning API that no longer exists, and its
LPIPS loss downloads VGG weights. The quantizers are written here under the official key names,
so the official CompVis checkpoints load into `VQGAN` as they are.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    from taming.modules.diffusionmodules.model import Decoder, Encoder
except ImportError as err:  # the core install leaves it to an extra (and to Colab's first cell)
    raise ImportError(
        "mmlib's VQGAN is built from taming-transformers' modules, which are not installed: "
        "pip install --no-deps taming-transformers (its other dependencies are not needed), "
        "or pip install 'mmlib[vqgan]'"
    ) from err

# The official vqgan_imagenet_f16_16384 config (its model.yaml), for fixtures and benches.
F16_16384_CONFIG = {
    "model": {
        "target": "taming.models.vqgan.VQModel",
        "params": {
            "embed_dim": 256,
            "n_embed": 16384,
            "ddconfig": {
                "double_z": False,
                "z_channels": 256,
                "resolution": 256,
                "in_channels": 3,
                "out_ch": 3,
                "ch": 128,
                "ch_mult": [1, 1, 2, 2, 4],
                "num_res_blocks": 2,
                "attn_resolutions": [16],
                "dropout": 0.0,
            },
        },
    }
}

KNOWN_TARGETS = {
    "taming.models.vqgan.VQModel": "vq",
    "taming.models.vqgan.GumbelVQ": "gumbel",
}


class VectorQuantizer(nn.Module):
    """Snap each vector to its nearest codebook entry (VQ-VAE), with a straight-through gradient.

    Parameter `embedding.weight` (n_embed x embed_dim), as taming's VectorQuantizer(2).
    """

    def __init__(self, n_embed: int, embed_dim: int, beta: float = 0.25):
        super().__init__()
        self.n_embed, self.embed_dim, self.beta = n_embed, embed_dim, beta
        self.embedding = nn.Embedding(n_embed, embed_dim)
        self.embedding.weight.data.uniform_(-1.0 / n_embed, 1.0 / n_embed)

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """Return the index of the nearest codebook entry for every vector of z (B, D, H, W)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.embed_dim)
        w = self.embedding.weight
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ w.T + w.pow(2).sum(1)[None]
        return dist.argmin(dim=1).view(z.shape[0], z.shape[2], z.shape[3])

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Return the codebook vectors of `indices` (B, H, W) as z_q (B, D, H, W)."""
        return self.embedding(indices).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor):
        """Return (z_q with straight-through gradient, codebook + commitment loss, indices)."""
        indices = self.codes(z)
        z_q = self.lookup(indices)
        # codebook loss pulls codes to the encoder outputs; commitment keeps the encoder near them
        loss = F.mse_loss(z_q, z.detach()) + self.beta * F.mse_loss(z, z_q.detach())
        z_q = z + (z_q - z).detach()  # straight-through: forward z_q, backward as if identity
        return z_q, loss, indices


class GumbelQuantizer(nn.Module):
    """The Gumbel-softmax quantizer of taming's GumbelVQ (vqgan_gumbel_f8), for inference.

    Parameters `proj` (logits over the codebook) and `embed.weight`, as in the official files.
    """

    def __init__(self, num_hiddens: int, embed_dim: int, n_embed: int):
        super().__init__()
        self.n_embed, self.embed_dim = n_embed, embed_dim
        self.proj = nn.Conv2d(num_hiddens, n_embed, 1)
        self.embed = nn.Embedding(n_embed, embed_dim)

    @property
    def embedding(self) -> nn.Embedding:
        return self.embed

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        return self.proj(z).argmax(dim=1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return self.embed(indices).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor):
        indices = self.codes(z)
        return self.lookup(indices), z.new_zeros(()), indices


def _straight_through_round(z: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    return z + (z_q - z).detach()


class VQGAN(nn.Module):
    """Encoder -> quant_conv -> quantize -> post_quant_conv -> decoder, with official key names.

    Images are (B, 3, H, W) in [-1, 1] (as taming); `encode` gives the codebook vectors and their
    indices on a grid `factor` times smaller than the image.
    """

    def __init__(self, ddconfig: dict, n_embed: int, embed_dim: int, kind: str = "vq"):
        super().__init__()
        self.ddconfig, self.n_embed, self.embed_dim, self.kind = (
            dict(ddconfig),
            n_embed,
            embed_dim,
            kind,
        )
        with contextlib.redirect_stdout(io.StringIO()):  # taming prints the latent shape
            self.encoder = Encoder(**ddconfig)
            self.decoder = Decoder(**ddconfig)
        z = ddconfig["z_channels"]
        if kind == "gumbel":
            self.quantize = GumbelQuantizer(z, embed_dim, n_embed)
        else:
            self.quantize = VectorQuantizer(n_embed, embed_dim)
        self.quant_conv = nn.Conv2d(z, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z, 1)

    @property
    def factor(self) -> int:
        """Return the downsampling factor: image side / token-grid side."""
        return 2 ** (len(self.ddconfig["ch_mult"]) - 1)

    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        """Return the continuous latent (B, embed_dim, h, w) before quantisation."""
        return self.quant_conv(self.encoder(images))

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (z_q, indices): the quantised latent and the token grid of `images`."""
        z_q, _, indices = self.quantize(self.encode_latent(images))
        return z_q, indices

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Return images (B, 3, H, W) in about [-1, 1] from a quantised latent."""
        return self.decoder(self.post_quant_conv(z_q))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Return images from a grid of codebook indices (B, h, w)."""
        return self.decode(self.quantize.lookup(indices))

    def vector_quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Return z snapped to the codebook, with a straight-through gradient (for generation:
        the optimiser moves z freely, the decoder only ever sees codebook vectors)."""
        z_q = self.quantize.lookup(self.quantize.codes(z))
        return _straight_through_round(z, z_q)

    def codebook_box(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the per-dimension (min, max) of the codebook: where latents should stay."""
        w = self.quantize.embedding.weight
        return w.min(dim=0).values.view(1, -1, 1, 1), w.max(dim=0).values.view(1, -1, 1, 1)

    def forward(self, images: torch.Tensor):
        """Return (reconstruction, codebook loss, indices)."""
        z_q, qloss, indices = self.quantize(self.encode_latent(images))
        return self.decode(z_q), qloss, indices


# ---------------------------------------------------------------------------------------------
# Loading the official checkpoints
# ---------------------------------------------------------------------------------------------


def read_config(config: str | os.PathLike | dict) -> dict:
    """Return the `model` section of a taming YAML config (a path or an already-loaded dict)."""
    if isinstance(config, dict):
        data = config
    else:
        import yaml

        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"no VQGAN config at {str(path)!r}")
        text = path.read_text(errors="replace")
        if text.lstrip().lower().startswith(("<!doctype html", "<html")):
            raise ValueError(
                f"{str(path)!r} is an HTML page, not a YAML config: the download "
                f"link returned an error page. Download it again."
            )
        data = yaml.safe_load(text)
    model = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(model, dict) or "target" not in model or "params" not in model:
        raise ValueError("a VQGAN config needs model.target and model.params (taming's format)")
    if model["target"] not in KNOWN_TARGETS:
        raise ValueError(
            f"config target {model['target']!r} is not a VQGAN mmlib can build; "
            f"known: {sorted(KNOWN_TARGETS)}"
        )
    return model


def vqgan_from_config(config: str | os.PathLike | dict) -> VQGAN:
    """Return an untrained VQGAN built from a taming config."""
    model = read_config(config)
    p = model["params"]
    return VQGAN(p["ddconfig"], p["n_embed"], p["embed_dim"], KNOWN_TARGETS[model["target"]])


def _read_checkpoint(path: Path, trusted: bool) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"no VQGAN checkpoint at {str(path)!r}")
    with open(path, "rb") as fh:
        head = fh.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        raise ValueError(
            f"{str(path)!r} is an HTML page, not a checkpoint: the original download links "
            f"(heibox.uni-heidelberg.de) are known to return an error page instead of the file. "
            f"Download it again, or get it where `mmlib zoo download full` says."
        )
    try:  # mmap: tensors stay on disk until copied into the model (one copy in memory)
        ckpt = torch.load(path, map_location="cpu", weights_only=not trusted, mmap=True)
    except Exception as err:
        if not trusted and "weights_only" in str(err):
            raise ValueError(
                f"{str(path)!r} holds Python objects that a safe load refuses ({err}). If you "
                f"trust the file, load it with load_vqgan(..., trusted=True)."
            ) from err
        raise ValueError(f"{str(path)!r} is not a checkpoint torch can read: {err}") from err
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} holds no state_dict")
    return state


def load_vqgan(
    config: str | os.PathLike | dict,
    checkpoint: str | os.PathLike | None = None,
    device=None,
    trusted: bool = False,
) -> VQGAN:
    """Return the VQGAN of a taming config with the weights of a (Lightning) checkpoint, in eval mode.

    `loss.*` keys (the training loss: LPIPS and the discriminator) are dropped; any other
    missing or unexpected key is an error that names it, never a silent `strict=False`.
    The file is read with `weights_only=True` unless `trusted=True`.
    """
    from mmlib.env import get_device

    model = vqgan_from_config(config)
    if checkpoint is not None:
        state = _read_checkpoint(Path(checkpoint), trusted)
        state = {k: v for k, v in state.items() if not k.startswith("loss.")}
        check_state_dict(model, state, str(checkpoint))
        model.load_state_dict(state)
        del state
    return model.to(get_device(device)).eval()


def check_state_dict(model: nn.Module, state: dict, source: str) -> None:
    """Raise a ValueError naming the first missing/unexpected keys and mismatched shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"shape mismatches {shapes[:3]}")
        if missing:
            parts.append(f"{len(missing)} missing keys, first {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, first {unexpected[:3]}")
        raise ValueError(
            f"the checkpoint {source!r} does not match the config: " + "; ".join(parts)
        )


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """Map images in [0, 1] to the [-1, 1] range VQGAN works in."""
    return images * 2 - 1


def from_model_range(images: torch.Tensor) -> torch.Tensor:
    """Map VQGAN output (about [-1, 1]) back to images in [0, 1], clamped."""
    return ((images + 1) / 2).clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# Pictures as token sequences (what a transformer reads and writes, notebook 06)
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


class Pixels(torch.nn.Module):
    """A stand-in for the VQGAN in `generate` that generates nothing: the latent *is* the picture,
    (B, 3, size, size) in [0, 1], with no codebook and no decoder (`factor` 1, the box [0, 1]).

    `generate(prompts, Pixels(), clips, GenerateConfig(init="noise", ...))` then runs the same
    loop, cutouts, losses, steps and learning rates on raw pixels: what CLIP alone asks for when
    it may set every pixel (notebook 05's control experiment). `init="image"` starts from a
    picture; `init="tokens"` has no codebook to draw from and is refused.
    """

    factor = 1
    embed_dim = 3

    @property
    def n_embed(self) -> int:
        raise ValueError("Pixels has no codebook to draw tokens from: use init='noise' or 'image'")

    def codebook_box(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the box the latent stays in: [0, 1] for every colour channel."""
        return torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)

    def vector_quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Return z unchanged: there is no codebook to snap to."""
        return z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Return the picture z (in [0, 1]) in the [-1, 1] range a VQGAN's decoder gives."""
        return to_model_range(z)

    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        """Return the latent of images in [-1, 1]: the pictures themselves, in [0, 1]."""
        return (images + 1) / 2
