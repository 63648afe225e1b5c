"""Matplotlib figures of results the notebooks show: pictures, curves, bars, heatmaps, spreads.
Each returns its Figure; colour maps are colour-blind safe. Figures that explain how a model
works (a token grid, an attention mask, a noise schedule, DALL-E 2's pipeline): `mmlib.diagrams`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from mmlib.images import load_image

SEQUENTIAL_CMAP = "viridis"  # perceptually uniform and colour-blind safe


def as_numpy(values) -> np.ndarray:
    """Return a tensor (any device, with or without grad) or an array-like as a numpy array."""
    return np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values)


def as_picture(image) -> np.ndarray:
    """Return a picture (PIL image, tensor (3, H, W) or (H, W, 3) in [0, 1], or array) as an
    (H, W, 3) array imshow can show."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        arr = image.detach().float().cpu()
        if arr.ndim == 3 and arr.shape[0] in (1, 3):
            arr = arr.permute(1, 2, 0)
        return arr.clamp(0, 1).numpy()
    return np.asarray(image)


def similarity_heatmap(
    sims: torch.Tensor | np.ndarray,
    images: Sequence | None = None,
    texts: Sequence[str] | None = None,
    title: str = "Cosine similarity between images and texts",
    annotate: bool = True,
):
    """Return a figure of the (images x texts) similarity matrix with thumbnails and captions."""
    sims = as_numpy(sims)
    if sims.ndim != 2:
        raise ValueError(f"sims must be a 2-D matrix, got shape {sims.shape}")
    n_img, n_txt = sims.shape
    if images is not None and len(images) != n_img:
        raise ValueError(f"{len(images)} images for {n_img} rows of sims")
    if texts is not None and len(texts) != n_txt:
        raise ValueError(f"{len(texts)} texts for {n_txt} columns of sims")
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * n_txt, 1.0 + 0.8 * n_img))
    im = ax.imshow(sims, cmap=SEQUENTIAL_CMAP, aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.04, label="cosine similarity")
    if annotate:
        mid = (sims.max() + sims.min()) / 2
        for i in range(n_img):
            for j in range(n_txt):
                colour = "black" if sims[i, j] > mid else "white"
                ax.text(
                    j, i, f"{sims[i, j]:.2f}", ha="center", va="center", color=colour, fontsize=8
                )
    ax.set_xticks(range(n_txt))
    ax.set_xticklabels(texts if texts is not None else range(n_txt), rotation=35, ha="right")
    ax.set_yticks(range(n_img))
    ax.set_yticklabels([] if images is not None else range(n_img))
    if images is not None:
        for i, image in enumerate(images):
            ax.imshow(as_picture(image), extent=(-1.45, -0.55, i + 0.45, i - 0.45), aspect="auto")
        ax.set_xlim(-1.5, n_txt - 0.5)
        ax.set_ylim(n_img - 0.5, -0.5)
    ax.set_xlabel("text")
    ax.set_ylabel("image")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def image_grid(
    images: Sequence,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    title: str | None = None,
    size: float = 1.4,
):
    """Return a figure showing `images` in a grid, each with an optional title."""
    if len(images) == 0:
        raise ValueError("image_grid needs at least one image")
    ncols = min(ncols, len(images))
    nrows = (len(images) + ncols - 1) // ncols
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size * ncols, size * nrows + 0.4), squeeze=False
    )
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(images):
            ax.imshow(as_picture(images[k]))
            if titles is not None:
                ax.set_title(titles[k], fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def image_rows(rows: Mapping[str, Sequence], title: str | None = None, size: float = 1.3):
    """Return a figure with one row of pictures per entry of `rows`, labelled once at its left
    (e.g. {"original": pictures, "step 60": reconstructions, ...})."""
    if not rows or any(len(r) == 0 for r in rows.values()):
        raise ValueError("image_rows needs at least one row, and no empty row")
    ncols = max(len(r) for r in rows.values())
    fig, axes = plt.subplots(
        len(rows), ncols, figsize=(size * ncols + 1.2, size * len(rows) + 0.4), squeeze=False
    )
    for axrow, (label, images) in zip(axes, rows.items(), strict=True):
        for k, ax in enumerate(axrow):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if k < len(images):
                ax.imshow(as_picture(images[k]))
        axrow[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def training_curves(history, panels: Sequence[Sequence[str]], title: str | None = None):
    """Return a figure with one panel per group of history keys, plotted against the step.

    `history` is an mmlib.training.History or its list of records.
    """
    records = getattr(history, "records", history)
    if not records:
        raise ValueError("the history is empty: nothing to plot")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    styles = ("-", "--", ":", "-.")
    for ax, keys in zip(axes[0], panels, strict=True):
        for k, key in enumerate(keys):
            rows = [r for r in records if key in r]
            if not rows:
                raise ValueError(f"no record has {key!r}; keys: {sorted(records[-1])}")
            ax.plot(
                [r["step"] for r in rows],
                [r[key] for r in rows],
                styles[k % 4],
                marker="o" if len(rows) < 20 else None,
                label=key.replace("_", " "),
            )
        ax.set_xlabel("step")
        ax.set_ylabel(", ".join(k.replace("_", " ") for k in keys))
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def probability_bars(labels: Sequence[str], probs: Sequence[float], title: str = "", image=None):
    """Return a horizontal bar chart of class probabilities (best on top), with the image beside."""
    if len(labels) != len(probs) or not labels:
        raise ValueError(f"need one probability per label, got {len(labels)} and {len(probs)}")
    order = np.argsort(probs)
    ncols = 2 if image is not None else 1
    fig, axes = plt.subplots(
        1,
        ncols,
        figsize=(3 * ncols + 2, 0.4 * len(labels) + 1.2),
        squeeze=False,
        gridspec_kw={"width_ratios": [1, 2][-ncols:]},
    )
    if image is not None:
        axes[0, 0].imshow(as_picture(image))
        axes[0, 0].axis("off")
    ax = axes[0, -1]
    ax.barh([labels[i] for i in order], [probs[i] for i in order], color="#0072B2")
    for y, i in enumerate(order):
        ax.text(min(probs[i] + 0.01, 0.9), y, f"{probs[i]:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    ax.set_title(title or "Zero-shot class probabilities")
    fig.tight_layout()
    return fig


def judged_bars(
    rows: dict[str, dict[str, float]],
    title: str = "Fraction judged correct",
    goal: float | None = None,
):
    """Return grouped bars: one group per row (a method or setting), one bar per judge.

    `rows` maps a name to {judge name: fraction}, e.g. {"VQGAN+CLIP": {"judge CLIP": 0.9, ...}}.
    """
    if not rows:
        raise ValueError("rows is empty: nothing to plot")
    judges = list(next(iter(rows.values())))
    x, width = np.arange(len(rows)), 0.8 / len(judges)
    fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 2.5, 3.2))
    colours = ("#0072B2", "#E69F00", "#009E73", "#CC79A7")
    for j, name in enumerate(judges):
        values = [row[name] for row in rows.values()]
        bars = ax.bar(
            x + (j - (len(judges) - 1) / 2) * width,
            values,
            width,
            label=name,
            color=colours[j % len(colours)],
        )
        ax.bar_label(bars, labels=[f"{v:.0%}" for v in values], fontsize=7)
    if goal is not None:
        ax.axhline(goal, color="grey", linestyle="--", linewidth=1, label=f"goal {goal:.0%}")
    ax.set_xticks(x, list(rows), fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("fraction correct")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def judged_grid(
    images: Sequence,
    prompts: Sequence[str],
    verdicts: dict,
    ncols: int = 10,
    title: str | None = None,
):
    """Return an image grid titled with each prompt and each judge's verdict (✓ or what it saw).

    `verdicts` is mmlib.judge.judge's result: {judge name: {"predictions", "correct"}}.
    """
    titles = []
    for k, prompt in enumerate(prompts):
        lines = [prompt]
        for name, v in verdicts.items():
            seen = "✓" if v["correct"][k] else "✗ " + " ".join(reversed(v["predictions"][k]))
            lines.append(f"{name.replace('_', ' ')}: {seen}")
        titles.append("\n".join(lines))
    return image_grid(images, titles, ncols=ncols, title=title, size=1.9)


def confusion_matrix(
    confusion: torch.Tensor | np.ndarray,
    classnames: Sequence[str],
    title: str = "Confusion matrix",
    value_label: str = "pictures",
):
    """Return a figure of a (true class x predicted class) confusion matrix, one row and one
    column per class name, with a colour bar saying what the counts are (`value_label`)."""
    confusion = as_numpy(confusion).astype(float)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(
            f"confusion must be a square (true x predicted) matrix, got shape {confusion.shape}"
        )
    if isinstance(classnames, str):
        raise ValueError(f"classnames must be a list of names, got the string {classnames!r}")
    n = confusion.shape[0]
    if n == 0:
        raise ValueError("confusion is empty: it needs at least one class")
    if len(classnames) != n:
        raise ValueError(f"{len(classnames)} classnames for a {n} x {n} confusion matrix")
    if not np.isfinite(confusion).all() or (confusion < 0).any():
        raise ValueError("confusion must hold counts or fractions: finite and not negative")
    side = min(12.0, 3.0 + 0.11 * n)
    fontsize = 9 if n <= 12 else 6
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    im = ax.imshow(confusion, cmap=SEQUENTIAL_CMAP, vmin=0)
    ax.set_xticks(range(n), list(classnames), rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n), list(classnames), fontsize=fontsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.04, label=value_label)
    fig.tight_layout()
    return fig


def hits_grid(hits: Sequence, title: str | None = None, ncols: int = 5, size: float = 1.3):
    """Return a figure of search results in rank order, each picture titled with its score.

    `hits` are mmlib.search.Hit results (anything with `.path` and `.score`).
    """
    if len(hits) == 0:
        raise ValueError("no hits to show: the search returned nothing")
    missing = [h for h in hits if not (hasattr(h, "path") and hasattr(h, "score"))]
    if missing:
        raise ValueError(
            f"hits must have .path and .score (mmlib.search.Hit); got {type(missing[0]).__name__}"
        )
    images = [load_image(h.path) for h in hits]
    return image_grid(images, [f"{h.score:.3f}" for h in hits], ncols=ncols, title=title, size=size)


def codebook_usage(counts: torch.Tensor | np.ndarray, title: str | None = None):
    """Return bars of how often each codebook entry is used, most used first (a VQGAN's
    codebook: a healthy one uses many codes, a collapsed one a handful)."""
    counts = as_numpy(counts)
    if counts.ndim != 1 or len(counts) == 0 or (counts < 0).any():
        raise ValueError("counts must be a non-empty 1-D array of non-negative counts")
    ordered = np.sort(counts)[::-1]
    used = (counts > 0).mean()
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.bar(range(len(ordered)), ordered, width=1.0, color="#0072B2")
    ax.set_xlabel("codebook entry (sorted by use)")
    ax.set_ylabel("tokens")
    ax.set_title(title or f"Codebook usage: {used:.0%} of {len(counts)} codes used")
    fig.tight_layout()
    return fig


def spread(
    rows: Sequence[dict],
    keys: Sequence[str],
    by: str,
    title: str = "The same recipe, other seeds",
    goals: dict[str, float] | None = None,
    labels: dict[str, str] | None = None,
):
    """Return a strip plot of each figure `keys` over runs (one dot per run, grouped by the
    row field `by`, e.g. the split), with its mean marked and, where given, its goal."""
    if not rows:
        raise ValueError("no runs to plot")
    missing = [k for k in (*keys, by) if k not in rows[0]]
    if missing:
        raise ValueError(f"the runs have no {missing}; they have {sorted(rows[0])}")
    groups = sorted({str(r[by]) for r in rows})
    markers = "osD^v<>"
    fig, ax = plt.subplots(figsize=(1.8 * len(keys) + 2.5, 3.4))
    for i, key in enumerate(keys):
        for j, group in enumerate(groups):
            values = [r[key] for r in rows if str(r[by]) == group]
            offset = (j - (len(groups) - 1) / 2) * 0.12
            ax.scatter(
                [i + offset] * len(values),
                values,
                marker=markers[j % len(markers)],
                color=("#0072B2", "#E69F00", "#009E73", "#CC79A7")[j % 4],
                label=f"{by} {group}" if i == 0 else None,
                zorder=3,
            )
        mean = float(np.mean([r[key] for r in rows]))
        ax.hlines(mean, i - 0.35, i + 0.35, color="black", linewidth=2, zorder=4)
        ax.annotate(f"mean {mean:.0%}", (i + 0.37, mean), fontsize=7, va="center")
        if goals and key in goals:
            ax.hlines(goals[key], i - 0.4, i + 0.4, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(keys)), [(labels or {}).get(k, k.replace("_", " ")) for k in keys])
    ax.set_xlim(-0.6, len(keys) - 0.1)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction right")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def picture_and_loss(
    image, losses: Sequence[float], title: str = "", loss_title: str = "The loss while optimising"
):
    """Return a two-panel figure: a generated picture (titled `title`, e.g. its prompt) and the
    loss at every optimisation step that made it."""
    losses = [float(v) for v in losses]
    if not losses:
        raise ValueError("losses is empty: nothing to plot (did the optimisation run?)")
    if not all(np.isfinite(losses)):
        raise ValueError("losses must be finite numbers; the run stopped on a NaN or inf loss")
    arr = as_picture(image)
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"image must be one picture (3, H, W), got shape {tuple(image.shape)}")
    fig, (left, right) = plt.subplots(1, 2, figsize=(7, 3), gridspec_kw={"width_ratios": [1, 1.4]})
    left.imshow(arr, interpolation="nearest")
    left.set_title(title)
    left.axis("off")
    right.plot(range(len(losses)), losses, color="#0072B2")
    right.set_xlabel("step")
    right.set_ylabel("loss")
    right.set_title(loss_title)
    right.grid(alpha=0.3)
    fig.tight_layout()
    return fig
