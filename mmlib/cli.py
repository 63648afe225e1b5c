"""The `mmlib` command: doctor, course, zoo, bench."""

from __future__ import annotations

import argparse
import logging
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmlib", description="The mmlib course's command line.")
    sub = p.add_subparsers(dest="command", required=True)

    doc = sub.add_parser("doctor", help="print versions, device, profile, cache dir and weights")
    doc.add_argument("--profile", default=None)

    course = sub.add_parser("course", help="execute every notebook in order into build/")
    course.add_argument("--profile", default="tiny")
    course.add_argument("--out", default="build")

    zoo = sub.add_parser("zoo", help="prepare or download the models of a profile")
    zsub = zoo.add_subparsers(dest="zoo_command", required=True)
    prep = zsub.add_parser("prepare", help="train or load every model the profile needs")
    prep.add_argument("profile", nargs="?", default=None)
    dl = zsub.add_parser("download", help="fetch the full profile's weights (or say how)")
    dl.add_argument("profile", choices=["full"])
    dl.add_argument("--all", action="store_true", help="also the optional official VQGANs")

    train = sub.add_parser("train", help="train a model of the course")
    tsub = train.add_subparsers(dest="model", required=True)
    clip = tsub.add_parser("clip", help="train a tiny CLIP on the shapes world (torchrun-ready)")
    from mmlib.contrastive import ClipTrainConfig

    defaults = ClipTrainConfig()
    clip.add_argument("--out", required=True, help="folder for checkpoints and the final model")
    clip.add_argument("--steps", type=int, default=defaults.steps)
    clip.add_argument("--batch-size", type=int, default=defaults.batch_size, help="global batch")
    clip.add_argument("--lr", type=float, default=defaults.lr)
    clip.add_argument("--seed", type=int, default=defaults.seed)
    clip.add_argument("--split", choices=["heldout", "all"], default=defaults.split)
    clip.add_argument("--eval-every", type=int, default=defaults.eval_every)
    clip.add_argument("--workers", type=int, default=defaults.num_workers)
    clip.add_argument("--device", default=None)

    vq = tsub.add_parser("vqgan", help="train a tiny VQGAN on the shapes world")
    vq.add_argument("--out", required=True, help="folder for checkpoints and the final model")
    vq.add_argument("--steps", type=int, default=None)
    vq.add_argument("--seed", type=int, default=0)

    dl_ = tsub.add_parser("dalle", help="train the token transformer on tiny-VQGAN tokens")
    from mmlib.dalle import DalleTrainConfig

    dd = DalleTrainConfig()
    dl_.add_argument("--out", required=True, help="folder for checkpoints and the final model")
    dl_.add_argument("--steps", type=int, default=dd.steps)
    dl_.add_argument("--batch-size", type=int, default=dd.batch_size)
    dl_.add_argument("--lr", type=float, default=dd.lr)
    dl_.add_argument("--seed", type=int, default=dd.seed)
    dl_.add_argument("--scenes", type=int, default=dd.n_scenes, help="training scenes")
    dl_.add_argument(
        "--full-world",
        action="store_true",
        help="train on the full world (both sizes, gradient backgrounds), not one "
        "large object on plain grey",
    )

    gen = sub.add_parser("generate", help="VQGAN+CLIP: a picture from prompts")
    from mmlib.generate import GenerateConfig

    gd = GenerateConfig()
    gen.add_argument("prompts", nargs="+", help="prompts for one picture: 'text:weight:stop'")
    gen.add_argument("--steps", type=int, default=gd.steps)
    gen.add_argument("--seed", type=int, default=gd.seed)
    gen.add_argument("--size", type=int, default=None, help="picture side (tiny 32, full 256)")
    gen.add_argument("--cutn", type=int, default=None)
    gen.add_argument("--lr", type=float, default=gd.lr)
    gen.add_argument(
        "--image-prompt",
        action="append",
        default=[],
        help="a picture to steer towards: 'path' or 'path:weight' (repeatable)",
    )
    gen.add_argument("--init-image", default=None, help="start from this picture")
    gen.add_argument("--init-weight", type=float, default=gd.init_weight)
    gen.add_argument("--out", default="generated.png")
    gen.add_argument("--video", default=None, help="also write the optimisation as GIF/MP4")
    gen.add_argument("--profile", default=None)

    search = sub.add_parser("search", help="index a folder of images and search it")
    ssub = search.add_subparsers(dest="search_command", required=True)
    index = ssub.add_parser("index", help="index (or update the index of) a folder of images")
    index.add_argument("folder")
    query = ssub.add_parser("query", help="search the index with a text (or an image path)")
    query.add_argument(
        "text", nargs="+", help="the query; weighted: 'a beach:1, a sunset:1, people:-1'"
    )
    query.add_argument("-k", type=int, default=10, help="how many results")
    query.add_argument("--sheet", default=None, help="also write a PNG contact sheet here")
    for p_ in (index, query):
        p_.add_argument("--index", default=None, help="index folder (default MMLIB_HOME/search)")
        p_.add_argument("--profile", default=None, help="tiny or full (the model to use)")

    bench = sub.add_parser("bench", help="measure speed and memory against a baseline")
    from mmlib.bench import BENCHES

    bench.add_argument("name", choices=sorted(BENCHES) + ["all"])
    bench.add_argument("--quick", action="store_true", help="a small, fast form (used by tests)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the `mmlib` command; return its exit status."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = _parser().parse_args(argv)
    if args.command == "doctor":
        from mmlib.env import doctor

        doctor(args.profile)
    elif args.command == "course":
        from mmlib.course import run_course

        runs = run_course(args.out, args.profile)
        return 1 if any(r.error for r in runs) else 0
    elif args.command == "zoo":
        from mmlib import zoo

        if args.zoo_command == "prepare":
            zoo.prepare(args.profile)
        else:
            return 0 if zoo.download_full(include_optional=args.all) else 1
    elif args.command == "train" and args.model == "dalle":
        from mmlib.dalle import train_dalle_command

        train_dalle_command(args)
    elif args.command == "train" and args.model == "vqgan":
        from mmlib.vqgan import train_vqgan_command

        train_vqgan_command(args)
    elif args.command == "train":
        from mmlib.contrastive import train_clip_command

        train_clip_command(args)
    elif args.command == "search":
        return _search(args)
    elif args.command == "generate":
        from mmlib.generate import generate_command

        return generate_command(args)
    elif args.command == "bench":
        from mmlib.bench import BENCHES

        names = sorted(BENCHES) if args.name == "all" else [args.name]
        for name in names:
            BENCHES[name](quick=args.quick)
    return 0


def _search(args) -> int:
    from pathlib import Path

    from mmlib import zoo
    from mmlib.env import cache_dir
    from mmlib.search import ImageIndex, contact_sheet, parse_query

    root = Path(args.index) if args.index else cache_dir() / "search"
    index = ImageIndex(root, zoo.get_clip(args.profile))
    if args.search_command == "index":
        index.build(args.folder)
        print(f"index in {root}: {len(index)} images")
        return 0
    hits = index.search(parse_query(" ".join(args.text)), k=args.k)
    width = max(len(h.path) for h in hits) if hits else 4
    print(f"{'rank':>4}  {'score':>6}  path")
    for h in hits:
        print(f"{h.rank + 1:>4}  {h.score:6.3f}  {h.path:<{width}}")
    if args.sheet:
        print(f"contact sheet: {contact_sheet(hits, args.sheet, title=' '.join(args.text))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
