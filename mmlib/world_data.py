"""The shapes world (`mmlib.toyworld`) as PyTorch datasets, and as picture files on disk.

- `ShapesWorld`: n captioned scenes of a split, item i drawn on demand (notebooks 01 and 04);
- `PairImages`: the zero-shot protocol's single-object pictures, `per_pair` of each (shape,
  colour) pair, labelled by class (notebooks 02 and the judges);
- `save_scenes`: scenes written as PNG files with a labels.json (notebook 03's collection).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mmlib.toyworld import (
    IMAGE_SIZE,
    Scene,
    all_pairs,
    allowed_pairs,
    render,
    render_image,
    sample_scene,
    to_tensor,
)


class ShapesWorld(Dataset):
    """`n` captioned scenes: item i is (image (3,H,W) float in [0,1], caption, attributes)."""

    def __init__(
        self,
        n: int,
        seed: int = 0,
        split: str = "heldout",
        kind: str | None = None,
        size: int = IMAGE_SIZE,
    ):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        allowed_pairs(split)  # validates split
        self.n, self.seed, self.split, self.kind, self.size = n, seed, split, kind, size

    def __len__(self) -> int:
        return self.n

    def scene(self, i: int) -> Scene:
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} scenes")
        return sample_scene(self.seed, i, self.split, self.kind, size=self.size)

    def __getitem__(self, i: int):
        scene = self.scene(i)
        return to_tensor(render(scene, self.size)), scene.caption, scene.attributes()


class PairImages(Dataset):
    """The zero-shot protocol: single-object images, `per_pair` of each (shape, colour) pair.

    Item i is (image, class index into `all_pairs()`, attributes). Use a seed other than the
    training seed for fresh renders.
    """

    def __init__(self, pairs=None, per_pair: int = 10, seed: int = 1234, size: int = IMAGE_SIZE):
        self.pairs = list(pairs) if pairs is not None else all_pairs()
        if not self.pairs or per_pair < 1:
            raise ValueError("PairImages needs at least one pair and per_pair >= 1")
        index = {p: k for k, p in enumerate(all_pairs())}
        unknown = [p for p in self.pairs if p not in index]
        if unknown:
            raise ValueError(f"unknown (shape, colour) pairs: {unknown[:3]}")
        self.labels = [index[p] for p in self.pairs]
        self.per_pair, self.seed, self.size = per_pair, seed, size

    def __len__(self) -> int:
        return len(self.pairs) * self.per_pair

    def picture_labels(self) -> list[int]:
        """Return the class index of every item, in order (without drawing any picture)."""
        return [self.labels[i // self.per_pair] for i in range(len(self))]

    def __getitem__(self, i: int):
        k = i // self.per_pair
        scene = sample_scene(self.seed, i, "all", "single", pair=self.pairs[k], size=self.size)
        return to_tensor(render(scene, self.size)), self.labels[k], scene.attributes()


def collate(batch):
    """Collate (image, caption-or-label, attributes) items: stacked images, lists for the rest."""
    images, second, attrs = zip(*batch, strict=True)
    second = torch.tensor(second) if isinstance(second[0], int) else list(second)
    return torch.stack(images), second, list(attrs)


def save_scenes(
    folder,
    n: int,
    seed: int = 0,
    split: str = "all",
    kind: str | None = "single",
    progress: bool = True,
) -> dict[str, dict]:
    """Write `n` scenes as PNG files into `folder` (named colour_shape_index.png) and their
    attributes into folder/labels.json; return {file name: attributes}. Existing files are kept."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    labels = {}
    for i in tqdm(range(n), desc="write scenes", disable=not progress, leave=False):
        scene = sample_scene(seed, i, split, kind)
        attrs = scene.attributes()
        name = f"{attrs['colour']}_{attrs['shape']}_{i:05d}.png"
        if not (folder / name).exists():
            render_image(scene).save(folder / name)
        labels[name] = {**attrs, "caption": scene.caption}
    (folder / "labels.json").write_text(json.dumps(labels))
    return labels
