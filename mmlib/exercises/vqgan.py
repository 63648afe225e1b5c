"""Notebook 04's fill-in: the vector quantiser (`mmlib.vqgan.VectorQuantizer`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from mmlib.exercises.core import Exercise, Mistake
from mmlib.vqgan import VectorQuantizer


def quantize(z: torch.Tensor, codebook: torch.Tensor, beta: float = 0.25):
    """Return mmlib's VectorQuantizer(z) with `codebook` as its embedding: (z_q, loss, indices).

    The module is built on the meta device (no weights made, no random numbers drawn) and called
    with the given codebook in place of its own, so gradients reach that codebook."""
    with torch.device("meta"):
        vq = VectorQuantizer(codebook.shape[0], codebook.shape[1], beta)
    return functional_call(vq, {"embedding.weight": codebook}, (z,))


BETAS = (0.25, 0.5, 0.1)  # another beta per seed: a 0.25 typed in for `beta` is caught


def _inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    gen = torch.Generator().manual_seed(seed)
    z, codebook = torch.randn(2, 4, 3, 3, generator=gen), torch.randn(16, 4, generator=gen)
    return z, codebook, BETAS[seed % len(BETAS)]


def _backprop(fn, args) -> tuple:
    """Run `fn` as a VQGAN would: a stand-in for the decoder's loss on z_q plus the VQ loss, back
    to z and to the codebook; return z_q, the loss, the indices and both gradients."""
    z, codebook, beta = args
    z.requires_grad_(True)
    codebook.requires_grad_(True)
    z_q, loss, k = fn(z, codebook, beta)
    (z_q.sin().mean() + loss).backward()
    return z_q, loss, k, z.grad, codebook.grad


def _variant(z, codebook, beta, *, nearest=True, norms=True, detach=True, legacy=False, st=True):
    """The quantiser with one slip (mistakes only; the right answer is mmlib's)."""
    b, d, h, w = z.shape
    flat = z.permute(0, 2, 3, 1).reshape(-1, d)
    dist = -2 * flat @ codebook.T + (codebook.pow(2).sum(1) if norms else 0)
    k = (dist.argmin(1) if nearest else dist.argmax(1)).view(b, h, w)
    z_q = codebook[k].permute(0, 3, 1, 2)
    to_code = F.mse_loss(z_q, z.detach() if detach else z)
    to_encoder = F.mse_loss(z, z_q.detach() if detach else z_q)
    loss = beta * to_code + to_encoder if legacy else to_code + beta * to_encoder
    return (z + (z_q - z).detach() if st else z_q), loss, k


def _slip(**slip):
    return lambda z, codebook, beta: _variant(z, codebook, beta, **slip)


QUANTIZE = Exercise(
    name="quantize_by_hand",
    where="mmlib.vqgan.VectorQuantizer",
    reference=quantize,
    inputs=_inputs,
    outputs=_backprop,
    mistakes=[
        Mistake(
            "k picks the farthest code: the nearest is the argmin of the distances",
            _slip(nearest=False),
        ),
        Mistake(
            "the distances miss the codes' squared norms |e_j|^2: without them the nearest "
            "code is not the one picked",
            _slip(norms=False),
        ),
        Mistake(
            "no gradient reaches z through z_q: end with the straight-through "
            "z + (z_q - z).detach()",
            _slip(st=False),
        ),
        Mistake(
            "beta weights the codebook term; it belongs on the commitment term, the one that "
            "moves the encoder (taming's legacy bug)",
            _slip(legacy=True),
        ),
        Mistake(
            "each loss term needs one side detached (z in the codebook term, the codes in the "
            "commitment term): without it both terms move both, and the gradients are off",
            _slip(detach=False),
        ),
        Mistake(
            "the commitment term is not multiplied by beta",
            lambda z, codebook, beta: _variant(z, codebook, 1.0),
        ),
    ],
)
