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
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from taming.modules.diffusionmodules.model import Decoder, Encoder

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
# Training a tiny VQGAN
# ---------------------------------------------------------------------------------------------

# f = 4 on 32 px images: an 8 x 8 grid of tokens, each covering 4 x 4 pixels. A small shape
# (about 11 px across) spans 3 x 3 tokens, so the grid keeps its outline; f = 8 (4 x 4 tokens)
# would blur small shapes into one or two tokens. 64 tokens also keep notebook 06's sequences
# short. 256 codes cover the shapes world's parts (8 colours x edges and corners, backgrounds)
# while few enough are used often enough to stay alive. Channels are multiples of 32 because
# taming's GroupNorm uses 32 groups.
TINY_VQGAN_DDCONFIG = {
    "double_z": False,
    "z_channels": 32,
    "resolution": 32,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 32,
    "ch_mult": [1, 1, 2],
    "num_res_blocks": 1,
    "attn_resolutions": [],
    "dropout": 0.0,
}
TINY_VQGAN = {"n_embed": 256, "embed_dim": 32, "ddconfig": TINY_VQGAN_DDCONFIG}


@dataclass
class VQGANTrainConfig:
    """Everything that decides a tiny-VQGAN training run."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 50
    disc_start: int = 600  # the patch discriminator joins after the autoencoder works
    disc_weight: float = 0.1
    disc_lr: float = 4e-4
    seed: int = 0
    split: str = "all"
    restart_every: int = 100  # dead-code fix: re-seed unused codes from encoder outputs
    eval_every: int = 250
    checkpoint_every: int = 250
    log_every: int = 10


def psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Return the peak signal-to-noise ratio in dB of images in [0, 1] against a reference."""
    mse = F.mse_loss(images.float().clamp(0, 1), reference.float()).item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def codebook_usage(indices: torch.Tensor, n_embed: int) -> dict:
    """Return the perplexity (effective number of codes used) and the fraction of codes used."""
    counts = torch.bincount(indices.flatten(), minlength=n_embed).float()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {
        "perplexity": entropy.exp().item(),
        "used": (counts > 0).float().mean().item(),
        "counts": counts,
    }


def _hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())


def _adaptive_weight(rec_loss, g_loss, last_layer, disc_weight: float) -> torch.Tensor:
    # taming's balance: scale the adversarial gradient to the size of the reconstruction one
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (g_grad.norm() + 1e-4)
    return weight.clamp(0, 1e4).detach() * disc_weight


def evaluate_vqgan(model: VQGAN, n: int = 256, seed: int = 4321) -> dict:
    """Return PSNR and codebook usage on `n` held-out shapes-world images (a seed not trained on)."""
    from mmlib import toyworld

    world = toyworld.ShapesWorld(n, seed=seed, split="all")
    images = torch.stack([world[i][0] for i in range(n)])
    model.eval()
    with torch.no_grad():
        recon, _, indices = model(to_model_range(images))
    usage = codebook_usage(indices, model.n_embed)
    return {
        "psnr": psnr(from_model_range(recon), images),
        "perplexity": usage["perplexity"],
        "codebook_used": usage["used"],
        "counts": usage["counts"],
    }


def train_vqgan(
    model: VQGAN,
    config: VQGANTrainConfig | None = None,
    folder: str | Path | None = None,
    progress: bool = True,
    on_disc_start=None,
):
    """Train a VQGAN on shapes-world images; return its History (loss, PSNR, codebook use).

    Reconstruction (L1 + L2) and codebook/commitment losses from the start; after `disc_start`
    steps taming's patch discriminator joins with a hinge loss, its gradient balanced against
    the reconstruction's. Unused codes are re-seeded from encoder outputs every
    `restart_every` steps. Checkpoints and resume as every trainer of the course.
    `on_disc_start(model)` is called just before the discriminator joins (to keep a snapshot).
    """
    from taming.modules.discriminator.model import NLayerDiscriminator, weights_init

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

    config = config or VQGANTrainConfig()
    torch.manual_seed(config.seed)
    disc = NLayerDiscriminator(input_nc=3, ndf=32, n_layers=2).apply(weights_init)
    both = nn.ModuleDict({"vqgan": model, "disc": disc})
    opt_g = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.disc_lr, betas=(0.5, 0.9))
    start, history = 0, History()
    if folder is not None and checkpoint_exists(folder):
        start, history = load_checkpoint(folder, both, [opt_g, opt_d], asdict(config))
    world = toyworld.ShapesWorld(config.steps * config.batch_size, config.seed, config.split)
    usage = torch.zeros(model.n_embed)
    seconds, tick = history.last("seconds", 0.0), time.perf_counter()
    last_layer = model.decoder.conv_out.weight
    bar = progress_bar(start, config.steps, "train VQGAN", progress)
    for step in bar:
        model.train()
        first = step * config.batch_size
        real = to_model_range(
            torch.stack([world[i][0] for i in range(first, first + config.batch_size)])
        )
        for group in opt_g.param_groups:
            group["lr"] = cosine_lr(step, config.steps, config.warmup, config.lr, min_ratio=0.05)
        z = model.encode_latent(real)
        z_q, qloss, indices = model.quantize(z)
        recon = model.decode(z_q)
        rec_loss = F.l1_loss(recon, real) + F.mse_loss(recon, real)
        loss = rec_loss + qloss
        gan_on = step >= config.disc_start
        if step == config.disc_start and on_disc_start is not None:
            on_disc_start(model)
        if gan_on:
            g_loss = -disc(recon).mean()
            loss = (
                loss + _adaptive_weight(rec_loss, g_loss, last_layer, config.disc_weight) * g_loss
            )
        check_finite(loss, step, folder)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        d_loss = torch.zeros(())
        if gan_on:
            d_loss = _hinge_d_loss(disc(real), disc(recon.detach()))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        usage += torch.bincount(indices.flatten(), minlength=model.n_embed).float()
        if config.restart_every and (step + 1) % config.restart_every == 0:
            dead = (usage == 0).nonzero().flatten()
            if len(dead):  # re-seed dead codes with random encoder outputs of this batch
                flat = z.detach().permute(0, 2, 3, 1).reshape(-1, model.embed_dim)
                pick = flat[torch.randint(0, len(flat), (len(dead),))]
                model.quantize.embedding.weight.data[dead] = pick
            usage.zero_()
        seconds += time.perf_counter() - tick
        done = step + 1
        if step % config.log_every == 0 or done == config.steps:
            history.log(
                step,
                loss=loss.item(),
                rec_loss=rec_loss.item(),
                codebook_loss=qloss.item(),
                disc_loss=d_loss.item(),
                seconds=seconds,
                batch_perplexity=codebook_usage(indices, model.n_embed)["perplexity"],
            )
            bar.set_postfix(rec=f"{rec_loss.item():.3f}")
        if config.eval_every and (done % config.eval_every == 0 or done == config.steps):
            ev = evaluate_vqgan(model)
            history.log(
                step,
                psnr=ev["psnr"],
                codebook_used=ev["codebook_used"],
                perplexity=ev["perplexity"],
                seconds=seconds,
            )
        if folder is not None and (done % config.checkpoint_every == 0 or done == config.steps):
            save_checkpoint(folder, both, [opt_g, opt_d], done, asdict(config), history)
        tick = time.perf_counter()
    bar.close()
    model.eval()
    return history


def train_vqgan_command(args) -> Path:
    """`mmlib train vqgan`: train the tiny VQGAN config; checkpoints in OUT/checkpoint (a re-run
    resumes), the model in OUT/model; prints PSNR and codebook use on held-out images."""
    from mmlib import zoo

    defaults = VQGANTrainConfig()
    config = VQGANTrainConfig(
        steps=args.steps or defaults.steps,
        seed=args.seed,
        disc_start=min(defaults.disc_start, (args.steps or defaults.steps) // 2),
    )
    torch.manual_seed(args.seed)
    model = VQGAN(**TINY_VQGAN)
    out = Path(args.out)
    history = train_vqgan(model, config, folder=out / "checkpoint")
    ev = evaluate_vqgan(model, n=512)
    zoo.save_model_dir(
        out / "model",
        model,
        {
            "config": TINY_VQGAN,
            "psnr": ev["psnr"],
            "codebook_used": ev["codebook_used"],
            "history": history.records,
        },
    )
    print(
        f"PSNR {ev['psnr']:.2f} dB on held-out images, {ev['codebook_used']:.0%} of the "
        f"codebook in use (perplexity {ev['perplexity']:.0f}); model in {out / 'model'}"
    )
    return out / "model"
