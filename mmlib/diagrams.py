"""Figures that explain how a model works, drawn from its parts rather than from its results:
the VQGAN's token grid over a picture (notebook 06), the token model's attention mask, a
diffusion noise schedule with a picture noised along it (notebook 07), and DALL-E 2's pipeline
(after Ramesh et al. 2022, Fig. 2). Each returns its Figure, as `mmlib.plots` does."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from mmlib.plots import as_numpy, as_picture


def token_grid(image, indices, title: str = "The token grid", annotate: bool = True):
    """Return a figure of `image` with the VQGAN token grid drawn over it and each token's index."""
    arr = as_picture(image)
    idx = as_numpy(indices)
    if idx.ndim != 2:
        raise ValueError(f"indices must be a 2-D token grid, got shape {idx.shape}")
    h, w = arr.shape[:2]
    gh, gw = idx.shape
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(arr, extent=(0, w, h, 0), interpolation="nearest")
    for k in range(1, gw):
        ax.axvline(k * w / gw, color="white", lw=0.8, alpha=0.8)
    for k in range(1, gh):
        ax.axhline(k * h / gh, color="white", lw=0.8, alpha=0.8)
    if annotate:
        for r in range(gh):
            for c in range(gw):
                ax.text(
                    (c + 0.5) * w / gw,
                    (r + 0.5) * h / gh,
                    str(idx[r, c]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white",
                    bbox={"facecolor": "black", "alpha": 0.45, "pad": 0.5, "lw": 0},
                )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    fig.tight_layout()
    return fig


def attention_mask(mask: torch.Tensor | np.ndarray, n_text: int, title: str | None = None):
    """Return a picture of an attention mask (True/1: the row's position may attend to the
    column's), with the boundary between the `n_text` text positions and the image ones."""
    mask = as_numpy(mask)
    if mask.ndim != 2 or mask.shape[0] != mask.shape[1] or not 0 < n_text < len(mask):
        raise ValueError(
            f"need a square mask and 0 < n_text < its size; got {mask.shape}, n_text={n_text}"
        )
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.imshow(mask.astype(float), cmap="Blues", vmin=0, vmax=1)
    ax.axhline(n_text - 0.5, color="#E69F00")
    ax.axvline(n_text - 0.5, color="#E69F00")
    ax.set_xlabel("attends to position (text | image)")
    ax.set_ylabel("position (text above the orange line, image below)")
    ax.set_title(title or "Causal mask: blue = may attend")
    fig.tight_layout()
    return fig


def dalle2_diagram():
    """Return a figure of how DALL-E 2 (unCLIP) connects its pieces: caption -> CLIP text
    encoder -> prior -> CLIP image embedding -> diffusion decoder (64 x 64) -> two diffusion
    upsamplers (256, then 1,024), after Ramesh et al. 2022, Fig. 2."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    boxes = [
        ('caption\n"a red star"', 0.0, 1.0, "#FFFFFF"),
        ("CLIP text\nencoder (frozen)", 1.6, 1.0, "#56B4E9"),
        ("prior\n(diffusion or\nautoregressive)", 3.2, 1.0, "#E69F00"),
        ("CLIP image\nembedding", 4.8, 1.0, "#56B4E9"),
        ("decoder\n(diffusion,\nmodified GLIDE)", 6.4, 1.0, "#009E73"),
        ("64 x 64\npicture", 6.4, -0.4, "#FFFFFF"),
        ("upsampler\nto 256 x 256", 4.8, -0.4, "#009E73"),
        ("upsampler\nto 1,024 x 1,024", 3.2, -0.4, "#009E73"),
    ]
    fig, ax = plt.subplots(figsize=(10, 3.4))
    centre = {}
    for text, x, y, colour in boxes:
        ax.add_patch(
            FancyBboxPatch((x, y), 1.3, 0.8, boxstyle="round,pad=0.05", fc=colour, ec="black", lw=1)
        )
        ax.text(x + 0.65, y + 0.4, text, ha="center", va="center", fontsize=8)
        centre[text] = (x, y)
    order = [b[0] for b in boxes]
    for a, b in zip(order, order[1:], strict=False):
        (xa, ya), (xb, yb) = centre[a], centre[b]
        if ya == yb:
            start = (xa + 1.35, ya + 0.4) if xb > xa else (xa - 0.05, ya + 0.4)
            end = (xb - 0.05, yb + 0.4) if xb > xa else (xb + 1.35, yb + 0.4)
        else:
            start, end = (xa + 0.65, ya - 0.05), (xb + 0.65, yb + 0.85)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12))
    ax.text(
        4.05,
        2.05,
        "the caption also conditions the decoder",
        ha="center",
        fontsize=7,
        style="italic",
    )
    ax.set_xlim(-0.2, 7.9)
    ax.set_ylim(-0.6, 2.3)
    ax.axis("off")
    ax.set_title("DALL-E 2 (unCLIP): text -> CLIP image embedding -> picture")
    fig.tight_layout()
    return fig


def noising(alpha_bar, pictures: Sequence, steps: Sequence[int], title: str | None = None):
    """Return a figure of a noise schedule: left, how much signal (sqrt(alpha_bar)) and noise
    (sqrt(1 - alpha_bar)) a step keeps; right, a picture noised at `steps` (one per step)."""
    alpha_bar = as_numpy(alpha_bar)
    if len(pictures) != len(steps) or not steps:
        raise ValueError(f"{len(pictures)} pictures for {len(steps)} steps")
    fig = plt.figure(figsize=(4.2 + 1.2 * len(steps), 2.8))
    grid = fig.add_gridspec(1, 2, width_ratios=[3.2, 1.2 * len(steps)])
    ax = fig.add_subplot(grid[0])
    t = np.arange(len(alpha_bar))
    ax.plot(t, np.sqrt(alpha_bar), "-", label="signal  sqrt(alpha_bar)")
    ax.plot(t, np.sqrt(1 - alpha_bar), "--", label="noise  sqrt(1 - alpha_bar)")
    ax.set_xlabel("step t")
    ax.set_ylabel("weight in x_t")
    ax.legend(fontsize=7)
    row = grid[1].subgridspec(1, len(steps))
    for k, (picture, step) in enumerate(zip(pictures, steps, strict=True)):
        a = fig.add_subplot(row[k])
        a.imshow(as_picture(picture))
        a.set_title(f"t = {step}", fontsize=8)
        a.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
