"""`mmlib bench ...`: speed and memory measured as ratios against a baseline in the same run.

Each bench prints a table and returns its figures as a dict. Variants whose peak memory is
compared run in their own child process, so one variant's allocations cannot hide another's.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """Return this process's peak resident memory so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_child(task: str, **kwargs) -> dict:
    """Run `task` (a function name in this module) in a fresh Python process; return its dict."""
    cmd = [sys.executable, "-m", "mmlib.bench", "--child", task, json.dumps(kwargs)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bench child {task} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# bench embed: encode_images against the source lesson's way
# ---------------------------------------------------------------------------------------------


def write_bench_images(folder: Path, n: int, size: int = 224, seed: int = 0) -> list[Path]:
    """Write `n` seeded PNG images of coloured shapes into `folder`; return their paths."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(3):
            x0, y0 = rng.integers(0, size // 2, 2)
            w, h = rng.integers(size // 8, size // 2, 2)
            box = [int(x0), int(y0), int(x0 + w), int(y0 + h)]
            fill = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
        path = folder / f"img_{i:05d}.png"
        img.save(path)
        paths.append(path)
    return paths


def _embed_child(variant: str, folder: str, n: int, model: str, batch_size: int) -> dict:
    import torch

    from mmlib.clip import encode_images, load_clip

    torch.set_num_threads(max(1, torch.get_num_threads()))
    m, preprocess, _ = load_clip(model, device="cpu")
    paths = sorted(Path(folder).glob("*.png"))[:n]
    with torch.inference_mode():  # warm-up, so both variants start equally warm
        m.encode_image(torch.zeros(2, 3, *_input_size(m)))
    base = peak_rss_mb()
    start = time.perf_counter()
    if variant == "lesson":
        # The source lesson: open every image, preprocess them all into a list, stack, one forward.
        from PIL import Image

        images = [Image.open(p).convert("RGB") for p in paths]
        batch = torch.stack([preprocess(im) for im in images])
        with torch.no_grad():
            feats = m.encode_image(batch)
            feats = feats / feats.norm(dim=-1, keepdim=True)
    else:
        feats = encode_images(m, preprocess, paths, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - start
    return {
        "variant": variant,
        "n": len(paths),
        "seconds": seconds,
        "images_per_s": len(paths) / seconds,
        "peak_mb": peak_rss_mb() - base,
        "checksum": float(feats.double().sum()),
    }


def _input_size(model) -> tuple[int, int]:
    size = model.visual.image_size
    return (size, size) if isinstance(size, int) else tuple(size)


def bench_embed(
    quick: bool = False, model: str = "mmlib:tiny-clip", batch_size: int = 64, sizes=None
) -> dict:
    """Measure images/s and peak memory of `encode_images` against the lesson's way; print a table."""
    sizes = sizes or ((128, 384) if quick else (200, 2000))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        write_bench_images(Path(tmp), max(sizes))
        for n in sizes:
            for variant in ("lesson", "mmlib"):
                results.append(
                    run_child(
                        "_embed_child",
                        variant=variant,
                        folder=tmp,
                        n=n,
                        model=model,
                        batch_size=batch_size,
                    )  # fmt: skip
                )
    print(f"bench embed: model {model}, batch_size {batch_size}, images read from PNG files")
    print(f"{'images':>7} {'variant':>8} {'img/s':>9} {'peak MB':>9}")
    for r in results:
        print(f"{r['n']:>7} {r['variant']:>8} {r['images_per_s']:>9.1f} {r['peak_mb']:>9.1f}")
    by = {(r["n"], r["variant"]): r for r in results}
    lo, hi = sizes[0], sizes[-1]
    figures = {
        "throughput_ratio": by[(hi, "mmlib")]["images_per_s"] / by[(hi, "lesson")]["images_per_s"],
        "mmlib_peak_growth_mb": by[(hi, "mmlib")]["peak_mb"] - by[(lo, "mmlib")]["peak_mb"],
        "lesson_peak_growth_mb": by[(hi, "lesson")]["peak_mb"] - by[(lo, "lesson")]["peak_mb"],
        "same_features": abs(by[(hi, "mmlib")]["checksum"] - by[(hi, "lesson")]["checksum"])
        < 1e-2 * max(1.0, abs(by[(hi, "lesson")]["checksum"])),
        "results": results,
    }
    print(
        f"throughput mmlib/lesson at {hi} images: {figures['throughput_ratio']:.2f}x (goal >= 1.0)\n"
        f"peak memory growth {lo}->{hi} images: mmlib {figures['mmlib_peak_growth_mb']:+.1f} MB, "
        f"lesson {figures['lesson_peak_growth_mb']:+.1f} MB (goal: mmlib flat)\n"
        f"same features from both: {figures['same_features']}"
    )
    return figures


BENCHES = {"embed": bench_embed}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        result = globals()[argv[1]](**json.loads(argv[2]))
        print(json.dumps(result))
        return
    raise SystemExit("use `mmlib bench NAME [--quick]`")


if __name__ == "__main__":
    main()
