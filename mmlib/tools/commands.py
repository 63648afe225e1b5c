"""What each `mmlib` command does, given its parsed arguments (`mmlib.tools.cli` parses them).

Each command checks its inputs before any slow work, prints its result in a line or a small
table, and returns the exit status.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from filelock import FileLock, Timeout

from mmlib import recipes, tiny_models, zoo
from mmlib.contrastive import ClipTrainConfig, train_clip
from mmlib.dalle import SAMPLING, evaluate_dalle
from mmlib.dalle_training import DalleTrainConfig, train_dalle
from mmlib.env import MMLibError, cache_dir
from mmlib.generate import GenerateConfig, generate, save_png
from mmlib.images import check_output_paths, display_path, load_image, save_video
from mmlib.prompts import image_prompt, parse_prompt
from mmlib.search import ImageIndex, contact_sheet, parse_query
from mmlib.store.checkpoints import save_model_dir, state_dict_cpu
from mmlib.transformer import TransformerConfig, save_transformer
from mmlib.vqgan_training import (
    TINY_VQGAN,
    VQGANTrainConfig,
    evaluate_vqgan,
    new_tiny_vqgan,
    train_vqgan,
)
from mmlib.zeroshot import evaluate_shapes


@contextmanager
def training_into(out: Path, first: bool = True):
    """Hold OUT/.lock while a training writes into OUT: a second `mmlib train` run on the same
    --out is refused at once, instead of the two overwriting each other's checkpoints."""
    if not first:  # torchrun: only the first process writes, and only it takes the lock
        yield out
        return
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise MMLibError(
            f"another training is writing to {str(out)!r} right now; wait for it to finish, "
            f"or give this one another --out"
        ) from None
    try:
        yield out
    finally:
        lock.release()


def train_clip_command(args) -> int:
    """`mmlib train clip`: train a tiny-config CLIP, on one process or under torchrun.

    Writes checkpoints to OUT/checkpoint (a re-run resumes) and the final model to OUT/model
    in open_clip's local-dir format; prints the zero-shot accuracy on seen and held-out pairs.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    rank = dist.get_rank() if dist.is_initialized() else 0
    config = ClipTrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        split=args.split,
        eval_every=args.eval_every,
        num_workers=args.workers,
    )
    out = Path(args.out)
    model, tokenizer = tiny_models.new_tiny_clip(args.seed), tiny_models.tiny_tokenizer()
    device = args.device or (
        f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() and world > 1 else None
    )
    with training_into(out, rank == 0):
        history = train_clip(model, tokenizer, config, folder=out / "checkpoint", device=device)
    if rank == 0:
        zs = evaluate_shapes(model, None, tokenizer, per_pair=20, seed=4321, split=args.split)
        info = {
            "trained": True,
            **asdict(config),
            "zeroshot_seen": zs["seen"],
            "zeroshot_heldout": zs["heldout"],
            "history": history.records,
        }
        tiny_models.save_tiny_clip(out / "model", model, info)
        print(
            f"zero-shot top-1: seen {zs['seen']:.3f}, held-out {zs['heldout']:.3f}; "
            f"model in {out / 'model'} (load_clip('local-dir:{out / 'model'}'))"
        )
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def train_vqgan_command(args) -> int:
    """`mmlib train vqgan`: train the tiny VQGAN config; checkpoints in OUT/checkpoint (a re-run
    resumes), the model in OUT/model; prints PSNR and codebook use on held-out images."""
    defaults = VQGANTrainConfig()
    steps = args.steps or defaults.steps
    config = VQGANTrainConfig(
        steps=steps, seed=args.seed, disc_start=min(defaults.disc_start, steps // 2)
    )
    model = new_tiny_vqgan(args.seed)
    out = Path(args.out)
    with training_into(out):
        history = train_vqgan(
            model, config, folder=out / "checkpoint", device=tiny_models.training_device()
        )
    ev = evaluate_vqgan(model, n=512)
    info = {
        "config": TINY_VQGAN,
        "psnr": ev["psnr"],
        "codebook_used": ev["codebook_used"],
        "history": history.records,
    }
    save_model_dir(out / "model", {"model.safetensors": state_dict_cpu(model)}, info)
    print(
        f"PSNR {ev['psnr']:.2f} dB on held-out images, {ev['codebook_used']:.0%} of the "
        f"codebook in use (perplexity {ev['perplexity']:.0f}); model in {out / 'model'}"
    )
    return 0


def train_dalle_command(args) -> int:
    """`mmlib train dalle`: train the token transformer on the tiny VQGAN's tokens; checkpoints
    in OUT/checkpoint (a re-run resumes), the model in OUT/model; prints the judges' verdicts."""
    world = {"object_size": None, "background": "gradient"} if args.full_world else {}
    train_config = DalleTrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        n_scenes=args.scenes,
        **world,
    )
    dev = tiny_models.training_device()
    vqgan = zoo.get_vqgan("tiny", device=dev)
    out = Path(args.out)
    with training_into(out):
        model, history = train_dalle(
            TransformerConfig(),
            train_config,
            vqgan,
            tiny_models.tiny_tokenizer(),
            folder=out / "checkpoint",
            device=dev,
        )
    info = {"history": history.records, "training": asdict(train_config)}
    save_transformer(out / "model", model, info)
    ev = evaluate_dalle(
        model,
        vqgan,
        zoo.get_generation_clips("tiny", device=dev),
        tiny_models.get_judges(dev),
        draws=args.draws,
        **SAMPLING,
    )
    ways = {
        "first": "first sample",
        "reranked_one": "best of 8 by the tiny CLIP",
        "reranked": "best of 8 by both CLIPs",
    }
    for way, label in ways.items():
        verdicts = ", ".join(
            f"{name} seen {v['seen']:.0%} held-out {v['heldout']:.0%}"
            for name, v in ev[way].items()
        )
        print(f"{label:26}: {verdicts}")
    print(f"{history.last('seconds'):.0f} s of training; model in {out / 'model'}")
    return 0


def generate_command(args) -> int:
    """`mmlib generate`: one picture from prompts, saved as PNG (with its settings) and video.

    Everything the user typed is checked before a model loads: prompts, image prompts, the
    init image, and that the picture and the video can be written where asked.
    """
    settings = recipes.generation_settings(zoo.get_profile(args.profile))
    steps = args.steps if args.steps is not None else settings["steps"]
    config = GenerateConfig(
        **{
            **settings,
            "steps": steps,
            "seed": args.seed,
            "lr": args.lr,
            "size": args.size if args.size is not None else settings["size"],
            "cutn": args.cutn if args.cutn is not None else settings["cutn"],
            "init": "image" if args.init_image else "tokens",
            "init_weight": args.init_weight,
            "frames_every": max(1, steps // 50) if args.video else 0,
        }
    )
    prompts = [parse_prompt(p) for p in args.prompts] + [image_prompt(p) for p in args.image_prompt]
    check_output_paths(args.out, args.video)
    init = None
    if args.init_image:
        init = torch.from_numpy(np.asarray(load_image(args.init_image))).permute(2, 0, 1) / 255.0
    result = generate(
        [prompts],
        zoo.get_vqgan(args.profile),
        zoo.get_generation_clips(args.profile),
        config,
        init_image=init,
    )
    if result.stopped:
        print(result.stopped)
    print(f"picture: {save_png(result.images[0], args.out, prompts, config)}")
    if args.video:
        print(f"video: {save_video([f[0] for f in result.frames], args.video)}")
    return 0 if result.stopped is None else 1


def search_command(args) -> int:
    """`mmlib search index|query`: build or update an index of a folder, or search it."""
    root = Path(args.index) if args.index else cache_dir() / "search"
    if args.search_command == "query":
        query = parse_query(" ".join(args.text))  # a bad query fails before the model loads
        index = ImageIndex.open(root, zoo.get_clip(args.profile))
        hits = index.search(query, k=args.k)
        shown = [display_path(h.path) for h in hits]
        width = max(map(len, shown)) if hits else 4
        print(f"{'rank':>4}  {'score':>6}  path")
        for h, path in zip(hits, shown, strict=True):
            print(f"{h.rank + 1:>4}  {h.score:6.3f}  {path:<{width}}")
        gone = sum(os.path.isabs(h.path) and not os.path.exists(h.path) for h in hits)
        if gone:
            print(
                f"{gone} of these files are no longer on disk: run `mmlib search index FOLDER` "
                f"again to bring the index up to date"
            )
        if args.sheet:
            print(f"contact sheet: {contact_sheet(hits, args.sheet, title=' '.join(args.text))}")
        return 0
    index = ImageIndex(root, zoo.get_clip(args.profile), batch_size=args.batch_size)
    report = index.build(args.folder)
    print(report)
    print(f"index in {root}: {len(index)} images")
    return 0
