"""`mmlib bench ...`: speed and memory measured as ratios against a baseline in the same run.

Each bench prints a table and returns its figures as a dict. Variants whose peak memory is
compared run in their own child process, so one variant's allocations cannot hide another's.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mmlib import recipes
from mmlib.clip import input_size, tensor_transform
from mmlib.env import cache_dir
from mmlib.generate import clamp_with_grad, from_model_range_raw, spherical_distance
from mmlib.tools import prepare, spread_runs

# ---------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """Return this process's peak resident memory so far, in MB.

    Reads VmHWM on Linux: unlike ru_maxrss, which Linux carries across exec, so that a child
    would report its parent's peak at fork time, VmHWM belongs to this program alone.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_child(task: str, **kwargs) -> dict:
    """Run `task` (a function name in this module) in a fresh Python process; return its dict."""
    cmd = [sys.executable, "-m", "mmlib.tools.bench", "--child", task, json.dumps(kwargs)]
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

    from mmlib.clip import encode_images, input_size
    from mmlib.store.clip_loading import load_clip

    torch.set_num_threads(max(1, torch.get_num_threads()))
    m, preprocess, _ = load_clip(model, device="cpu")
    paths = sorted(Path(folder).glob("*.png"))[:n]
    with torch.inference_mode():  # warm-up, so both variants start equally warm
        m.encode_image(torch.zeros(2, 3, *input_size(m)))
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
                    )
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


# ---------------------------------------------------------------------------------------------
# bench train: time-to-accuracy of the tiny CLIP, and the trainer against a plain loop
# ---------------------------------------------------------------------------------------------


def _train_child(variant: str, steps: int, batch_size: int) -> dict:
    import open_clip
    import torch

    from mmlib import tiny_models
    from mmlib.clip import tensor_transform
    from mmlib.contrastive import ClipTrainConfig, ShapesBatches, train_clip

    model, tokenizer = tiny_models.new_tiny_clip(0), tiny_models.tiny_tokenizer()
    config = ClipTrainConfig(steps=steps, batch_size=batch_size, eval_every=0, warmup=2)
    start = time.perf_counter()
    if variant == "mmlib":
        train_clip(model, tokenizer, config, progress=False, device="cpu")
    else:
        # A plain open_clip loop: same model, batches and optimiser settings, nothing else.
        batches = ShapesBatches(config, tokenizer, tensor_transform(model))
        loss_fn = open_clip.ClipLoss()
        opt = torch.optim.AdamW(
            model.parameters(),
            lr=config.lr,
            betas=(0.9, 0.98),
            eps=1e-6,
            weight_decay=config.weight_decay,
        )
        model.train()
        for step in range(steps):
            images, tokens = batches.batch(step)
            image_features, text_features, scale = model(images, tokens)
            loss = loss_fn(image_features, text_features, scale)
            opt.zero_grad()
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - start
    return {"variant": variant, "seconds": seconds, "samples_per_s": steps * batch_size / seconds}


def bench_train(quick: bool = False) -> dict:
    """Measure (a) the tiny CLIP recipe's zero-shot accuracy over 3 training seeds x 3 held-out
    splits (mean, min, max, wall time) and (b) the trainer's samples/s against a plain loop."""
    if quick:  # the code path, in a minute: its numbers mean nothing
        spread_result = spread_runs.clip_spread(
            seeds=(0,), splits=("heldout", "heldout-1"), steps=30
        )
    else:
        spread_result = spread_runs.clip_spread()
        print(f"saved: {spread_runs.save('clip', spread_result)}")
    speed_steps, repeats = (8, 1) if quick else (40, 3)
    runs = {}
    for _ in range(repeats):  # alternated, best of each: a slow moment of the machine hits one run
        for v in ("plain", "mmlib"):
            run = run_child("_train_child", variant=v, steps=speed_steps, batch_size=128)
            if v not in runs or run["samples_per_s"] > runs[v]["samples_per_s"]:
                runs[v] = run
    ratio = runs["mmlib"]["samples_per_s"] / runs["plain"]["samples_per_s"]
    print(
        f"bench train (b): {speed_steps} steps of batch 128, best of {repeats}; plain open_clip loop "
        f"{runs['plain']['samples_per_s']:.0f} samples/s, mmlib trainer "
        f"{runs['mmlib']['samples_per_s']:.0f} samples/s: {ratio:.2f}x (goal >= 1.0)"
    )
    return {"spread": spread_result, "throughput_ratio": ratio, "runs": runs}


# ---------------------------------------------------------------------------------------------
# bench search: exact top-k vs the naive way vs FAISS, against the memory-bandwidth floor
# ---------------------------------------------------------------------------------------------


def clustered_unit_vectors(
    n: int, dim: int = 512, clusters: int = 1000, spread: float = 0.6, seed: int = 0
) -> np.ndarray:
    """Return (n, dim) float16 unit vectors in clusters, like real CLIP embeddings (not noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float16)
    for start in range(0, n, 65536):
        m = min(65536, n - start)
        x = centres[rng.integers(0, clusters, m)]
        x = x + spread * rng.standard_normal((m, dim)).astype(np.float32) / np.sqrt(dim)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _timed(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def bench_search(quick: bool = False, n: int | None = None, dim: int = 512) -> dict:
    """Measure top-10 query latency: mmlib's exact search, the naive way and FAISS, with FAISS's
    recall@10 and the time to read the matrix once (the memory-bandwidth floor)."""
    import torch

    from mmlib.nearest import FaissSearcher, exact_topk, recall_at_k

    n = n or (100_000 if quick else 1_000_000)
    data = clustered_unit_vectors(n, dim)
    matrix = torch.from_numpy(data)
    rng = np.random.default_rng(1)
    queries = data[rng.integers(0, n, 20)].astype(np.float32)
    queries += 0.3 * rng.standard_normal(queries.shape).astype(np.float32) / np.sqrt(dim)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    q_t = torch.from_numpy(queries)
    floor, _ = _timed(lambda: data.view(np.int16).max(), 5)
    exact_s, exact = _timed(lambda: [exact_topk(matrix, q, 10)[1] for q in q_t], 3)
    exact_s /= len(q_t)

    def naive(q):  # numpy dot product, then a full Python sort
        scores = data @ q.astype(np.float16)
        return sorted(range(n), key=lambda i: -scores[i])[:10]

    naive_s, _ = _timed(lambda: naive(queries[0]), 1)
    start = time.perf_counter()
    faiss_index = FaissSearcher(data)
    build_s = time.perf_counter() - start
    faiss_s, (_, approx) = _timed(lambda: faiss_index.search(queries, 10), 3)
    faiss_s /= len(queries)
    single_s, _ = _timed(lambda: [faiss_index.search(q, 10) for q in queries], 1)
    single_s /= len(queries)
    recall = recall_at_k(approx, torch.stack(exact))
    mb = data.nbytes / 1e6
    print(
        f"bench search: top-10 over {n:,} x {dim} float16 clustered unit vectors ({mb:.0f} MB), "
        f"{torch.get_num_threads()} threads"
    )
    rows = [
        ("read the matrix once (floor)", floor),
        ("mmlib exact (torch fp16 + topk)", exact_s),
        ("naive (numpy dot + Python sort)", naive_s),
        (
            f"FAISS IVF (nlist {faiss_index.index.nlist}, nprobe {faiss_index.index.nprobe})",
            single_s,
        ),
    ]
    for name, sec in rows:
        print(f"  {name:<44} {sec * 1000:10.2f} ms/query")
    figures = {
        "exact_vs_naive": naive_s / exact_s,
        "exact_vs_floor": exact_s / floor,
        "faiss_recall_at_10": recall,
        "faiss_vs_exact": exact_s / single_s,
        "faiss_build_s": build_s,
        "n": n,
    }
    print(
        f"exact is {figures['exact_vs_naive']:.0f}x faster than naive (goal >= 20x) and "
        f"{figures['exact_vs_floor']:.2f}x the bandwidth floor (goal <= 2x)\n"
        f"FAISS: recall@10 {recall:.3f} (goal >= 0.95), {figures['faiss_vs_exact']:.1f}x the "
        f"speed of exact (goal >= 10x); built in {build_s:.1f} s"
    )
    figures["indexing"] = _bench_indexing(128 if quick else 1000)
    return figures


def _bench_indexing(n: int) -> dict:
    """Indexing throughput against encode_images alone on the same files (bookkeeping cost)."""
    result = run_child("_indexing_child", n=n)
    ratio = result["index_per_s"] / result["encode_per_s"]
    print(
        f"indexing {n} images: {result['index_per_s']:.0f} img/s, encode_images alone "
        f"{result['encode_per_s']:.0f} img/s: {ratio:.2f}x (goal >= 0.90)"
    )
    return {**result, "ratio": ratio}


def _indexing_child(n: int) -> dict:
    from mmlib import world_data
    from mmlib.clip import encode_images
    from mmlib.images import scan_images
    from mmlib.search import ImageIndex
    from mmlib.store.clip_loading import load_clip

    clip = load_clip("mmlib:tiny-clip", device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        world_data.save_scenes(folder, n, seed=5, progress=False)
        paths = [f.path for f in scan_images(folder)[0]]
        encode_images(clip.model, clip.preprocess, paths[:64], progress=False)  # warm-up
        encode_s, _ = _timed(
            lambda: encode_images(clip.model, clip.preprocess, paths, progress=False), 1
        )
        index = ImageIndex(Path(tmp) / "idx", clip)
        index_s, _ = _timed(lambda: index.build(folder, progress=False), 1)
    return {"encode_per_s": n / encode_s, "index_per_s": n / index_s}


# ---------------------------------------------------------------------------------------------
# bench vqgan: time-to-quality of the tiny VQGAN
# ---------------------------------------------------------------------------------------------


def _vqgan_child(steps: int, eval_every: int, disc_start: int) -> dict:

    from mmlib.vqgan_training import VQGANTrainConfig, new_tiny_vqgan, train_vqgan

    config = VQGANTrainConfig(steps=steps, eval_every=eval_every, disc_start=disc_start)
    model = new_tiny_vqgan(config.seed)
    start = time.perf_counter()
    history = train_vqgan(model, config, progress=False, device="cpu")
    wall = time.perf_counter() - start
    curve = [
        {
            "step": r["step"] + 1,
            "seconds": r["seconds"],
            "psnr": r["psnr"],
            "codebook_used": r["codebook_used"],
        }
        for r in history.records
        if "psnr" in r
    ]
    return {"curve": curve, "wall_seconds": wall}


def _write_official_fixture(path: str) -> dict:
    import torch

    from mmlib import vqgan

    model = vqgan.vqgan_from_config(vqgan.F16_16384_CONFIG)
    state = dict(model.state_dict())
    state["loss.discriminator.main.0.weight"] = torch.zeros(64, 3, 4, 4)
    torch.save({"state_dict": state, "global_step": 0}, path)
    return {
        "model_mb": sum(v.numel() * v.element_size() for v in model.state_dict().values()) / 1e6
    }


def _load_memory_child(path: str) -> dict:
    from mmlib import vqgan

    base = peak_rss_mb()
    model = vqgan.load_vqgan(vqgan.F16_16384_CONFIG, path, device="cpu")
    peak = peak_rss_mb()
    model_mb = sum(v.numel() * v.element_size() for v in model.state_dict().values()) / 1e6
    return {"peak_growth_mb": peak - base, "model_mb": model_mb}


def bench_vqgan_loading() -> dict:
    """Measure peak memory while loading a checkpoint of the official f16 16384 size."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "last.ckpt")
        run_child("_write_official_fixture", path=path)
        result = run_child("_load_memory_child", path=path)
    copies = result["peak_growth_mb"] / result["model_mb"] - 1
    print(
        f"loading a {result['model_mb']:.0f} MB official-size VQGAN checkpoint: peak memory grew "
        f"{result['peak_growth_mb']:.0f} MB = the model + {copies:.2f} copies of its weights "
        f"(goal: at most 1 copy beyond the model)"
    )
    return {**result, "copies_beyond_model": copies}


def bench_vqgan(quick: bool = False) -> dict:
    """Measure the tiny VQGAN's PSNR on held-out images against seconds of training (2 CPUs)."""
    from mmlib.vqgan_training import VQGANTrainConfig

    default = VQGANTrainConfig()
    steps = 40 if quick else default.steps
    result = run_child(
        "_vqgan_child",
        steps=steps,
        eval_every=max(10, steps // 8),
        disc_start=steps // 2 if quick else default.disc_start,
    )
    print(f"bench vqgan: tiny VQGAN, {steps} steps of batch {default.batch_size}")
    print(f"{'step':>6} {'train s':>8} {'PSNR dB':>8} {'codes used':>11}")
    for r in result["curve"]:
        print(f"{r['step']:>6} {r['seconds']:>8.1f} {r['psnr']:>8.2f} {r['codebook_used']:>11.0%}")
    final = result["curve"][-1]
    print(
        f"final: {final['psnr']:.2f} dB, {final['codebook_used']:.0%} of the codebook after "
        f"{final['seconds']:.0f} s (goal >= 26 dB and >= 50% within 300 s)"
    )
    result["loading"] = bench_vqgan_loading()
    return result


# ---------------------------------------------------------------------------------------------
# bench generate: mmlib's generator against a loop in the style of the original notebook
# ---------------------------------------------------------------------------------------------


def _generation_models(config: str, device: str):
    """Return (clip, vqgan) for a bench: the tiny ones, or the full profile's architectures
    (its downloaded weights when present, else random weights: speed does not depend on them)."""
    import open_clip

    from mmlib import vqgan as vq
    from mmlib import zoo

    if config == "tiny":
        return zoo.get_clip("tiny", device=device), zoo.get_vqgan("tiny", device=device)
    try:
        return zoo.get_clip("full", device=device), zoo.get_vqgan("full", device=device)
    except FileNotFoundError:
        model = open_clip.create_model(zoo.FULL_CLIP[0], pretrained=None).to(device).eval()
        clip = (model, None, open_clip.get_tokenizer(zoo.FULL_CLIP[0]))
        return clip, vq.vqgan_from_config(vq.F16_16384_CONFIG).to(device).eval()


def reference_step_cutouts(
    images: torch.Tensor, cut_size: int, cutn: int, cut_min: float, generator: torch.Generator
) -> torch.Tensor:
    """The original VQGAN+CLIP notebook's way, for `mmlib bench generate`: a Python loop over
    cuts, each cropped by slicing, pooled to size and augmented on its own."""
    _, _, h, w = images.shape
    side_max = min(h, w)
    cuts = []
    for _ in range(cutn):
        side = int(side_max * (cut_min + (1 - cut_min) * torch.rand(1, generator=generator).item()))
        x0 = int(torch.randint(0, w - side + 1, (1,), generator=generator))
        y0 = int(torch.randint(0, h - side + 1, (1,), generator=generator))
        cut = F.adaptive_avg_pool2d(images[:, :, y0 : y0 + side, x0 : x0 + side], cut_size)
        if torch.rand(1, generator=generator).item() < 0.5:
            cut = cut.flip(-1)
        theta = torch.eye(2, 3)[None].clone()
        theta[:, :, :2] += 0.08 * (2 * torch.rand(1, 2, 2, generator=generator) - 1)
        theta = theta.to(images)
        grid = F.affine_grid(theta.expand(len(cut), -1, -1), list(cut.shape), align_corners=False)
        cut = F.grid_sample(cut, grid, padding_mode="border", align_corners=False)
        cuts.append(cut + 0.03 * torch.randn(cut.shape, generator=generator).to(images))
    return torch.cat(cuts)


def reference_generate(
    prompt: str,
    vqgan,
    clip,
    steps: int,
    cutn: int,
    lr: float = 0.2,
    seed: int = 0,
    size: int = 32,
    device="cpu",
) -> torch.Tensor:
    """A straightforward loop in the style of the original VQGAN+CLIP notebook (one picture,
    per-cut Python loop); the baseline of `mmlib bench generate`."""
    model, _, tokenizer = clip
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        target = F.normalize(model.encode_text(tokenizer([prompt]).to(device)), dim=-1)
    grid = size // vqgan.factor
    idx = torch.randint(0, vqgan.n_embed, (1, grid, grid), generator=gen).to(device)
    z = vqgan.quantize.lookup(idx).clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    normalize, size = tensor_transform(model), input_size(model)[0]
    lo, hi = (t.to(device) for t in vqgan.codebook_box())
    for _ in range(steps):
        images = clamp_with_grad(from_model_range_raw(vqgan.decode(vqgan.vector_quantize(z))), 0, 1)
        cuts = reference_step_cutouts(images, size, cutn, 0.6, gen)
        embeds = F.normalize(model.encode_image(normalize(cuts)), dim=-1)
        loss = spherical_distance(embeds, target).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            z.copy_(torch.maximum(torch.minimum(z, hi), lo))
    return images.detach()


def _generate_child(
    variant: str, steps: int, cutn: int, prompts: int, config: str = "tiny", device: str = "cpu"
) -> dict:
    import torch

    from mmlib import generate as g

    clip, vqgan = _generation_models(config, device)
    for p in vqgan.parameters():
        p.requires_grad_(False)
    size = recipes.generation_settings(config)["size"]
    texts = ["a red star", "a blue circle", "a green heart", "a white cross"][:prompts]
    g.generate(
        texts[:1],
        vqgan,
        [clip],
        g.GenerateConfig(steps=1, cutn=cutn, size=size),
        progress=False,
        device=device,
    )  # warm-up (CUDA kernels, allocator)
    if device != "cpu":
        torch.cuda.synchronize()
    start = time.perf_counter()
    if variant == "reference":
        for text in texts:  # one picture at a time
            reference_generate(text, vqgan, clip, steps, cutn, size=size, device=device)
    else:  # the reference's settings: crops from 0.6 of the side, no smoothness prior
        config_ = g.GenerateConfig(steps=steps, cutn=cutn, size=size, cut_min=0.6, smoothness=0.0)
        g.generate(texts, vqgan, [clip], config_, progress=False, device=device)
    if device != "cpu":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "variant": variant,
        "iterations_per_s": steps * len(texts) / seconds,
        "threads": torch.get_num_threads(),
        "device": device,
        "config": config,
    }


def bench_generate(quick: bool = False) -> dict:
    """Measure picture-iterations per second of mmlib's generator against the reference loop
    (same models, cutn and prompts), each in its own process: tiny models on the CPU, and the
    full configuration (ViT-B-32 + f16_16384 at 256 px, cutn 32) on a GPU when there is one."""
    import torch

    steps, cutn, prompts = (10, 16, 2) if quick else (30, 32, 4)
    cases = [("tiny", "cpu", steps, cutn, prompts)]
    if torch.cuda.is_available():
        cases.append(("full", "cuda", 10 if quick else 30, 32, 2 if quick else 4))
    out = {}
    for config, device, n, cuts, k in cases:
        runs = {
            v: run_child(
                "_generate_child",
                variant=v,
                steps=n,
                cutn=cuts,
                prompts=k,
                config=config,
                device=device,
            )
            for v in ("reference", "mmlib")
        }
        ratio = runs["mmlib"]["iterations_per_s"] / runs["reference"]["iterations_per_s"]
        print(
            f"bench generate: {config} models on {device}, cutn {cuts}, {k} prompts, {n} steps "
            f"each\n  reference loop (per-cut Python loop, one picture at a time): "
            f"{runs['reference']['iterations_per_s']:.1f} it/s\n  mmlib generate (batched "
            f"cutouts, prompts as one batch): {runs['mmlib']['iterations_per_s']:.1f} it/s\n"
            f"  {ratio:.2f}x (goal >= 1.5x)"
        )
        out[f"{config}-{device}"] = {"runs": runs, "ratio": ratio}
    out["ratio"] = out["tiny-cpu"]["ratio"]
    if quick:
        out["spread"] = spread_runs.generate_spread(
            seeds=(0,), prompt_sets=(0,), steps=20, prompts=4
        )
    else:
        out["spread"] = spread_runs.generate_spread()
        print(f"saved: {spread_runs.save('generate', out['spread'])}")
    return out


def bench_dalle(quick: bool = False) -> dict:
    """Measure the token model recipe over 3 training seeds x 2 prompt sets x 2 sampling seeds:
    the judged fraction of its first sample and of its best of 8 (mean, min, max)."""
    if quick:
        return spread_runs.dalle_spread(
            seeds=(0,), prompt_sets=(0,), sampling_seeds=(0,), steps=30, n=2
        )
    result = spread_runs.dalle_spread()
    print(f"saved: {spread_runs.save('dalle', result)}")
    return result


def _sampling_child(generator: str, pictures: int, threads: int) -> dict:
    """Time one generator drawing `pictures` pictures for the benchmark's captions on the CPU,
    as the course samples it: unCLIP (prior + 50 guided DDIM steps), the token model
    (dalle.SAMPLING, one sample per caption) or VQGAN+CLIP (the tiny profile's steps, as one
    batch; no best-of)."""
    import torch

    from mmlib import dalle, generate, judge, tiny_generators, unclip, zoo
    from mmlib.transformer import sample
    from mmlib.vqgan import decode_tokens

    torch.set_num_threads(threads)
    pairs = judge.benchmark_pairs()
    captions = [judge.benchmark_prompt(*pairs[i % len(pairs)]) for i in range(pictures)]
    if generator == "unCLIP":
        model = tiny_generators.get_unclip(device="cpu")
        tick = time.perf_counter()
        images = unclip.generate(model, captions)
    elif generator == "token model":
        model, vqgan = tiny_generators.get_dalle(device="cpu"), zoo.get_vqgan("tiny", device="cpu")
        tick = time.perf_counter()
        images = decode_tokens(vqgan, sample(model, captions, n=1, **dalle.SAMPLING))
    else:
        vqgan, clips = zoo.get_vqgan("tiny", device="cpu"), zoo.get_generation_clips("tiny", "cpu")
        config = generate.GenerateConfig(**recipes.generation_settings("tiny"))
        tick = time.perf_counter()
        images = generate.generate(captions, vqgan, clips, config, progress=False, device="cpu")
        images = images.images
    seconds = time.perf_counter() - tick
    return {
        "generator": generator,
        "pictures": len(images),
        "seconds": seconds,
        "samples_per_s": len(images) / seconds,
        "threads": threads,
    }


def bench_unclip(quick: bool = False) -> dict:
    """Measure unCLIP's recipe over 3 training seeds x 2 prompt sets (each way of feeding the
    decoder judged twice, and the VQGAN's reconstructions of the oracle's renders, their
    ceiling; the prior's cosines), then the sampling speed of unCLIP, the token model and
    VQGAN+CLIP in the same run, each in its own process with this machine's threads (goal:
    unCLIP draws 100 pictures in <= 30 s on 2 CPU cores). Full: saved as one result, the
    spread's "sampling_speed" (notebook 07 shows both)."""
    if quick:
        result = spread_runs.unclip_spread(
            seeds=(0,), prompt_sets=(0,), prior_steps=20, decoder_steps=20, n=1, scenes=256
        )
        counts = {"unCLIP": 10, "token model": 10, "VQGAN+CLIP": 2}
    else:
        result = spread_runs.unclip_spread()
        counts = {"unCLIP": 100, "token model": 100, "VQGAN+CLIP": 20}
    threads = os.cpu_count() or 1
    runs = {
        name: run_child("_sampling_child", generator=name, pictures=n, threads=threads)
        for name, n in counts.items()
    }
    base = runs["unCLIP"]["samples_per_s"]
    print(f"bench unclip: sampling on the CPU ({threads} threads), pictures per second")
    for name, run in runs.items():
        print(
            f"  {name:<12} {run['samples_per_s']:8.2f}/s ({run['pictures']} in "
            f"{run['seconds']:.1f} s); unCLIP draws {base / run['samples_per_s']:.1f}x as many"
        )
    print(f"  unCLIP: 100 pictures in {100 / base:.1f} s (goal <= 30 s on 2 CPU cores)")
    result["sampling_speed"] = runs
    if not quick:
        print(f"saved: {spread_runs.save('unclip', result)}")
    return result


def bench_prepare(quick: bool = False) -> dict:
    """Print how long each stage of `mmlib zoo prepare` took. Quick: the stages of the last
    prepare in MMLIB_HOME. Full: prepare from scratch in a temporary MMLIB_HOME, with the
    stages side by side as `zoo prepare` runs them, and again one at a time (the baseline)."""

    if quick:
        path = cache_dir() / prepare.TIMES_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no {path.name} in {cache_dir()}: run `mmlib zoo prepare`")
        runs = {"last prepare": json.loads(path.read_text())}
    else:
        runs = {}
        for name, lanes in (("one at a time", "1"), ("side by side", "")):
            with tempfile.TemporaryDirectory() as home:
                env = {**os.environ, "MMLIB_HOME": home, "MMLIB_PREPARE_LANES": lanes}
                subprocess.run(
                    [sys.executable, "-m", "mmlib", "zoo", "prepare"],
                    env=env,
                    check=True,
                    capture_output=True,
                )
                runs[name] = json.loads((Path(home) / prepare.TIMES_FILE).read_text())
    stages = [k for k in prepare.PREPARE_STEPS]
    print(f"bench prepare: seconds per stage ({', '.join(runs)})")
    for stage in [*stages, "wall"]:
        print(
            f"  {stage:<20}"
            + "".join(f" {r.get(stage, float('nan')):10.0f}" for r in runs.values())
        )
    if len(runs) == 2:
        a, b = runs.values()
        print(f"side by side is {a['wall'] / b['wall']:.2f}x faster than one at a time")
        spread_runs.save("prepare", runs)
    return runs


BENCHES = {
    "embed": bench_embed,
    "train": bench_train,
    "search": bench_search,
    "vqgan": bench_vqgan,
    "generate": bench_generate,
    "dalle": bench_dalle,
    "unclip": bench_unclip,
    "prepare": bench_prepare,
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        result = globals()[argv[1]](**json.loads(argv[2]))
        print(json.dumps(result))
        return
    raise SystemExit("use `mmlib bench NAME [--quick]`")


if __name__ == "__main__":
    main()
