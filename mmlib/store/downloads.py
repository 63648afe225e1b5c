"""The full profile's files: where each comes from, where mmlib keeps it, how big it is, its
licence; finding them on this machine, downloading them, and saying exactly what to fetch
where there is no network.

The full profile is pretrained OpenCLIP ViT-B-32 (laion2b_s34b_b79k) and the official taming
VQGAN (f16, 16384 codes), downloaded once by `mmlib zoo download full` or placed by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mmlib.env import cache_dir
from mmlib.store.fetch import DownloadError, download
from mmlib.store.weights import HF_WEIGHT_FILES, find_in_hf_cache, is_offline

FULL_CLIP = ("ViT-B-32", "laion2b_s34b_b79k")
FULL_VQGAN = "vqgan_imagenet_f16_16384"


@dataclass(frozen=True)
class FullFile:
    """One file the full profile needs: where it comes from and where mmlib looks for it."""

    name: str
    folder: str  # under MMLIB_HOME/full
    filename: str
    url: str
    size_mb: int | None  # approximate
    sha256: str | None  # None where no published checksum is known
    licence: str
    hf_repo: str | None = None  # also found in the Hugging Face hub cache
    optional: bool = False  # not used by the course; fetched by `mmlib zoo download full --all`

    def local_path(self, home: str | os.PathLike | None = None) -> Path:
        return cache_dir(home) / "full" / self.folder / self.filename


FULL_FILES: tuple[FullFile, ...] = (
    FullFile(
        name="OpenCLIP ViT-B-32 laion2b_s34b_b79k",
        folder="ViT-B-32-laion2b_s34b_b79k",
        filename="open_clip_model.safetensors",
        url="https://huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/main/open_clip_model.safetensors",
        size_mb=605,
        sha256=None,
        licence="MIT (weights released by LAION under MIT)",
        hf_repo="laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    ),
    FullFile(
        name="taming VQGAN imagenet f16 16384 (checkpoint)",
        folder=FULL_VQGAN,
        filename="last.ckpt",
        url="https://heibox.uni-heidelberg.de/d/a7530b09fed84f80a887/files/?p=%2Fckpts%2Flast.ckpt&dl=1",
        size_mb=980,
        sha256=None,
        licence="MIT (taming-transformers, CompVis)",
    ),
    FullFile(
        name="taming VQGAN imagenet f16 16384 (config)",
        folder=FULL_VQGAN,
        filename="model.yaml",
        url="https://heibox.uni-heidelberg.de/d/a7530b09fed84f80a887/files/?p=%2Fconfigs%2Fmodel.yaml&dl=1",
        size_mb=None,
        sha256=None,
        licence="MIT (taming-transformers, CompVis)",
    ),
    *(
        FullFile(
            name=f"taming {name} ({what})",
            folder=name,
            filename=filename,
            url=f"https://heibox.uni-heidelberg.de/d/{share}/files/?p=%2F{sub}%2F{filename}&dl=1",
            size_mb=size if what == "checkpoint" else None,
            sha256=None,
            licence="MIT (taming-transformers, CompVis)",
            optional=True,
        )
        for name, share, size in (
            ("vqgan_imagenet_f16_1024", "8088892a516d4e3baf92", 958),
            ("vqgan_gumbel_f8_8192", "2e5662443a6b4307b470", 376),
        )
        for what, sub, filename in (
            ("checkpoint", "ckpts", "last.ckpt"),
            ("config", "configs", "model.yaml"),
        )
    ),
)


def find_full_file(item: FullFile, home: str | os.PathLike | None = None) -> Path | None:
    """Return where `item` is on this machine (MMLIB_HOME/full or the hub cache), or None."""
    local = item.local_path(home)
    if local.is_file() and local.stat().st_size > 0:
        return local
    for alt in (".bin",) if local.suffix == ".safetensors" else ():
        other = local.with_name("open_clip_pytorch_model" + alt)
        if other.is_file():
            return other
    if item.hf_repo:
        return find_in_hf_cache(item.hf_repo, HF_WEIGHT_FILES)
    return None


def full_profile_status(home: str | os.PathLike | None = None) -> list[dict]:
    """Return, for each file of the full profile, its name, where it goes and whether it is here."""
    return [
        {
            "name": item.name,
            "present": find_full_file(item, home) is not None,
            "path": str(item.local_path(home)),
            "url": item.url,
            "size_mb": item.size_mb,
            "optional": item.optional,
        }
        for item in FULL_FILES
    ]


def download_instructions(home: str | os.PathLike | None = None) -> str:
    """Return exactly what to fetch for the full profile and where to put each file."""
    lines = ["The full profile needs these files (fetch them where there is a network):"]
    for item in sorted(FULL_FILES, key=lambda f: f.optional):
        if item.optional and "optional" not in lines[-1] and "Optional" not in "".join(lines):
            lines.append(
                "Optional (other official VQGANs that load_vqgan reads; not used by the course):"
            )
        size = f"~{item.size_mb} MB" if item.size_mb else "small"
        lines.append(f"  - {item.name} ({size}, licence: {item.licence})")
        lines.append(f"      from: {item.url}")
        lines.append(f"      put at: {item.local_path(home)}")
    lines.append("Or copy a whole MMLIB_HOME from a machine where `mmlib zoo download full` ran.")
    return "\n".join(lines)


def download_full(home: str | os.PathLike | None = None, include_optional: bool = False) -> bool:
    """Fetch the full profile's files that are missing; return True when all are present.

    Offline, fetch nothing and print exactly what to fetch and where to put it.
    """
    wanted = [item for item in FULL_FILES if include_optional or not item.optional]
    missing = [item for item in wanted if find_full_file(item, home) is None]
    if not missing:
        print("All files of the full profile are present.")
        return True
    if is_offline():
        print("No network here (or HF_HUB_OFFLINE=1): nothing downloaded.\n")
        print(download_instructions(home))
        return False
    ok = True
    for item in missing:
        try:
            download(item.url, item.local_path(home), sha256=item.sha256)
        except DownloadError as err:
            ok = False
            print(f"Could not download {item.name}: {err}\n  put it at {item.local_path(home)}")
    return ok
