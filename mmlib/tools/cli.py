"""The `mmlib` command: what you can type (the parser) and how it answers (`main`).

A mistake on the command line or in a file it names is one line on stderr that says what was
wrong and what to do, and exit status 2; no traceback (``--debug`` or ``MMLIB_DEBUG=1`` shows
it). Anything else is a bug in mmlib: exit status 1 and a line asking to report it
(`users_mistake` tells the two apart). What each command does is in `mmlib.tools.commands`.
"""

from __future__ import annotations

import argparse
import errno
import logging
import math
import os
import sys
import traceback
from pathlib import Path

from mmlib.env import MMLibError, apply_start_method


def _whole(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least {least}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    return _whole(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    return _whole(text, 0)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (no nan, no inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number above 0")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number (no nan, no inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number")
    return value


def _parser() -> argparse.ArgumentParser:
    """The `mmlib` parser: one builder per command, called in the order `--help` lists them."""
    p = argparse.ArgumentParser(prog="mmlib", description="The mmlib course's command line.")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)
    _add_doctor(sub)
    _add_course(sub)
    _add_zoo(sub)
    _add_train(sub)
    _add_generate(sub)
    _add_search(sub)
    _add_bench(sub)
    return p


def _add_doctor(sub) -> None:
    doc = sub.add_parser("doctor", help="print versions, device, profile, cache dir and weights")
    doc.add_argument("--profile", default=None)


def _add_course(sub) -> None:
    course = sub.add_parser("course", help="execute every notebook in order into build/executed/")
    course.add_argument("--profile", default="tiny")
    course.add_argument("--out", default="build/executed")


def _add_zoo(sub) -> None:
    zoo = sub.add_parser("zoo", help="prepare, download, export or import the models")
    zsub = zoo.add_subparsers(dest="zoo_command", required=True)
    prep = zsub.add_parser("prepare", help="train or load every model the profile needs")
    prep.add_argument("profile", nargs="?", default=None)
    dl = zsub.add_parser("download", help="fetch the full profile's weights (or say how)")
    dl.add_argument("profile", choices=["full"])
    dl.add_argument("--all", action="store_true", help="also the optional official VQGANs")
    exp = zsub.add_parser("export", help="write every tiny model and result into one pack file")
    exp.add_argument("file")
    imp = zsub.add_parser("import", help="put a pack's models into MMLIB_HOME (file or URL)")
    imp.add_argument("source", help="a pack file or an https:// URL")
    imp.add_argument("--sha256", default=None, help="the pack's expected SHA-256 (for a URL)")


def _add_train(sub) -> None:
    train = sub.add_parser("train", help="train a model of the course")
    tsub = train.add_subparsers(dest="model", required=True)
    _add_train_clip(tsub)
    vq = tsub.add_parser("vqgan", help="train a tiny VQGAN on the shapes world")
    _add_out(vq)
    vq.add_argument("--steps", type=positive_int, default=None)
    vq.add_argument("--seed", type=non_negative_int, default=0)
    _add_train_dalle(tsub)


def _add_out(parser) -> None:
    parser.add_argument("--out", required=True, help="folder for checkpoints and the final model")


def _add_optimiser_args(parser, config, batch_help: str | None = None) -> None:
    """--out, --steps, --batch-size, --lr and --seed, defaulting to `config`'s fields."""
    _add_out(parser)
    parser.add_argument("--steps", type=positive_int, default=config.steps)
    parser.add_argument(
        "--batch-size", type=positive_int, default=config.batch_size, help=batch_help
    )
    parser.add_argument("--lr", type=positive_float, default=config.lr)
    parser.add_argument("--seed", type=non_negative_int, default=config.seed)


def _add_train_clip(tsub) -> None:
    from mmlib.contrastive import ClipTrainConfig

    clip = tsub.add_parser("clip", help="train a tiny CLIP on the shapes world (torchrun-ready)")
    cd = ClipTrainConfig()
    _add_optimiser_args(clip, cd, batch_help="global batch")
    clip.add_argument("--split", default=cd.split, help="heldout, all, or another named split")
    clip.add_argument("--eval-every", type=non_negative_int, default=cd.eval_every)
    clip.add_argument(
        "--workers",
        type=non_negative_int,
        default=cd.num_workers,
        help="processes rendering batches beside the training (they pay only on an idle core)",
    )
    clip.add_argument("--device", default=None)


def _add_train_dalle(tsub) -> None:
    from mmlib.dalle import BENCHMARK_DRAWS
    from mmlib.dalle_training import DalleTrainConfig

    dl_ = tsub.add_parser("dalle", help="train the token transformer on tiny-VQGAN tokens")
    dd = DalleTrainConfig()
    _add_optimiser_args(dl_, dd)
    dl_.add_argument("--scenes", type=positive_int, default=dd.n_scenes, help="training scenes")
    dl_.add_argument(
        "--draws", type=positive_int, default=BENCHMARK_DRAWS, help="draws of the benchmark"
    )
    dl_.add_argument(
        "--full-world",
        action="store_true",
        help="train on the full world (both sizes, gradient backgrounds), not one large object "
        "on plain grey",
    )


def _add_generate(sub) -> None:
    from mmlib.generate import GenerateConfig
    from mmlib.recipes import generation_settings

    gen = sub.add_parser("generate", help="VQGAN+CLIP: a picture from prompts")
    gd = GenerateConfig()
    tiny, full = generation_settings("tiny"), generation_settings("full")
    gen.add_argument("prompts", nargs="+", help="prompts for one picture: 'text:weight:stop'")
    gen.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help=f"optimisation steps (tiny {tiny['steps']}, full {full['steps']})",
    )
    gen.add_argument("--seed", type=non_negative_int, default=gd.seed)
    gen.add_argument(
        "--size",
        type=positive_int,
        default=None,
        help=f"picture side (tiny {tiny['size']}, full {full['size']})",
    )
    gen.add_argument("--cutn", type=positive_int, default=None)
    gen.add_argument("--lr", type=positive_float, default=gd.lr)
    gen.add_argument(
        "--image-prompt",
        action="append",
        default=[],
        help="a picture to steer towards: 'path' or 'path:weight' (repeatable)",
    )
    gen.add_argument("--init-image", default=None, help="start from this picture")
    gen.add_argument("--init-weight", type=finite_float, default=gd.init_weight)
    gen.add_argument("--out", default="generated.png")
    gen.add_argument("--video", default=None, help="also write the optimisation as .gif or .mp4")
    gen.add_argument("--profile", default=None)


def _add_search(sub) -> None:
    search = sub.add_parser("search", help="index a folder of images and search it")
    ssub = search.add_subparsers(dest="search_command", required=True)
    index = ssub.add_parser("index", help="index (or update the index of) a folder of images")
    index.add_argument("folder")
    index.add_argument("--batch-size", type=positive_int, default=64, help="images per batch")
    query = ssub.add_parser("query", help="search the index with a text (or an image path)")
    query.add_argument(
        "text", nargs="+", help="the query; weighted: 'a beach:1, a sunset:1, people:-1'"
    )
    query.add_argument("-k", type=positive_int, default=10, help="how many results")
    query.add_argument("--sheet", default=None, help="also write a PNG contact sheet here")
    for p_ in (index, query):
        p_.add_argument("--index", default=None, help="index folder (default MMLIB_HOME/search)")
        p_.add_argument("--profile", default=None, help="tiny or full (the model to use)")


def _add_bench(sub) -> None:
    from mmlib.tools.bench import BENCHES

    bench = sub.add_parser("bench", help="measure speed, memory and quality against a baseline")
    bench.add_argument("name", choices=sorted(BENCHES) + ["all"])
    bench.add_argument("--quick", action="store_true", help="a small, fast form (used by tests)")


def _run(args) -> int:
    from mmlib.tools import commands

    if args.command == "doctor":
        from mmlib.tools.doctor import doctor

        doctor(args.profile)
        return 0
    if args.command == "course":
        from mmlib.tools.runner import run_course

        runs = run_course(args.out, args.profile)
        return 1 if any(r.error for r in runs) else 0
    if args.command == "zoo":
        from mmlib.store import packs
        from mmlib.store.downloads import download_full
        from mmlib.tools.prepare import prepare

        if args.zoo_command == "prepare":
            prepare(args.profile)
            return 0
        if args.zoo_command == "export":
            return packs.export_command(args.file)
        if args.zoo_command == "import":
            return packs.import_command(args.source, args.sha256)
        return 0 if download_full(include_optional=args.all) else 1
    if args.command == "train":
        return {
            "clip": commands.train_clip_command,
            "vqgan": commands.train_vqgan_command,
            "dalle": commands.train_dalle_command,
        }[args.model](args)
    if args.command == "search":
        return commands.search_command(args)
    if args.command == "generate":
        return commands.generate_command(args)
    if args.command == "bench":
        from mmlib.tools.bench import BENCHES

        for name in sorted(BENCHES) if args.name == "all" else [args.name]:
            BENCHES[name](quick=args.quick)
    return 0


PACKAGE = Path(__file__).resolve().parents[1]
# OS errors about the user's files and disk: theirs to fix wherever they are raised.
USERS_ERRNOS = {
    errno.ENOENT,
    errno.EACCES,
    errno.EPERM,
    errno.ENOSPC,
    errno.EROFS,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
    errno.ENAMETOOLONG,
}


def users_mistake(err: BaseException) -> bool:
    """Return whether `err` is the user's to fix rather than a bug in mmlib: an MMLibError (each
    names what to do), an OSError about their files or disk, or a ValueError or OSError that
    mmlib's own code raised on purpose (a refused argument or file). The same ValueError from
    deep inside torch, json or numpy is mmlib passing on something it should have checked."""
    if isinstance(err, MMLibError):
        return True
    if isinstance(err, OSError) and err.errno in USERS_ERRNOS:
        return True
    if not isinstance(err, (ValueError, OSError)):
        return False
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE)


def main(argv: list[str] | None = None) -> int:
    """Run the `mmlib` command; return its exit status (2 for a mistake the user can fix)."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("mmlib").setLevel(logging.INFO)  # mmlib says what it trains; others, warnings
    args = _parser().parse_args(argv)  # argparse itself answers bad arguments with status 2
    debug = args.debug or os.environ.get("MMLIB_DEBUG", "") not in ("", "0")
    try:
        apply_start_method()
        return _run(args)
    except KeyboardInterrupt:
        print("mmlib: stopped (Ctrl-C); what was finished is kept.", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            traceback.print_exc()
        if users_mistake(err):
            print(f"mmlib {args.command}: error: {err}", file=sys.stderr)
            return 2
        print(
            f"mmlib {args.command}: internal error ({type(err).__name__}: {err}). Run it again "
            f"with --debug to see where, and please report it.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
