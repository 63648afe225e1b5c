"""Measuring the spread of the course's results (`mmlib bench train|generate|dalle|unclip`):
runs over training seeds, held-out splits, prompt sets and sampling seeds, in child processes
side by side (one per core, as `mmlib zoo prepare`), each with its own seeds and thread count.
Their full results are kept in MMLIB_HOME/bench/ and, for the notebooks, in mmlib/data/spread/
(`mmlib.spread.cached`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from mmlib import recipes, tiny_models, zoo
from mmlib.env import cache_dir
from mmlib.spread import (
    CLIP_GOALS,
    DALLE_GOALS,
    GENERATE_GOALS,
    UNCLIP_COSINE_GOALS,
    UNCLIP_GOALS,
    print_order,
    print_table,
    recipe_keys,
    summarise,
    unclip_order,
)
from mmlib.tools.prepare import prepare_lanes


def run_parallel(task: str, jobs: list[dict], lanes: int | None = None) -> list[dict]:
    """Run `task` (a function of this module) once per job in child processes, `lanes` at a
    time (default: as `mmlib zoo prepare`); return their results in the order of `jobs`."""
    default_lanes, _ = prepare_lanes()
    lanes = max(1, min(lanes or default_lanes, len(jobs)))
    threads = max(1, (os.cpu_count() or 1) // lanes)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
    results: list[dict | None] = [None] * len(jobs)
    running: dict[int, subprocess.Popen] = {}
    todo = list(range(len(jobs)))
    while todo or running:
        while todo and len(running) < lanes:
            k = todo.pop(0)
            cmd = [sys.executable, "-m", "mmlib.tools.spread_runs", task, json.dumps(jobs[k])]
            running[k] = subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        time.sleep(0.2)
        for k, proc in list(running.items()):
            if proc.poll() is None:
                continue
            out, err = proc.communicate()
            del running[k]
            if proc.returncode != 0:
                for other in running.values():
                    other.kill()
                raise RuntimeError(f"spread child {task} {jobs[k]} failed:\n{err[-3000:]}")
            results[k] = json.loads(out.strip().splitlines()[-1])
    return results


def provenance() -> dict:
    """Return when, where and from which commit a measurement was made."""
    import platform
    from datetime import datetime, timezone

    import torch

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit or "unknown",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "torch": torch.__version__,
    }


def save(name: str, result: dict) -> Path:
    """Write a bench's result, with its provenance, to MMLIB_HOME/bench/NAME.json; return it."""
    result.setdefault("provenance", provenance())
    path = cache_dir() / "bench" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
    return path


def _clip_run(seed: int, split: str, steps: int | None = None) -> dict:
    import torch

    from mmlib.contrastive import ClipTrainConfig, train_clip
    from mmlib.zeroshot import evaluate_shapes

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    recipe = {**recipes.TINY_CLIP_TRAINING, "seed": seed, "split": split, "eval_every": 0}
    if steps:
        recipe["steps"] = steps
    model, tokenizer = tiny_models.new_tiny_clip(seed), tiny_models.tiny_tokenizer()
    start = time.perf_counter()
    history = train_clip(model, tokenizer, ClipTrainConfig(**recipe), progress=False, device="cpu")
    zs = evaluate_shapes(model, None, tokenizer, per_pair=20, seed=4321, device="cpu", split=split)
    return {
        "seed": seed,
        "split": split,
        "seen": zs["seen"],
        "heldout": zs["heldout"],
        "train_seconds": history.last("seconds"),
        "wall_seconds": time.perf_counter() - start,
        "threads": torch.get_num_threads(),
    }


def clip_spread(
    seeds=(0, 1, 2), splits=("heldout", "heldout-1", "heldout-2"), steps: int | None = None
) -> dict:
    """Train the tiny CLIP recipe for every (seed, split); return rows, summary and wall time."""
    start = time.perf_counter()
    jobs = [{"seed": s, "split": sp, "steps": steps} for sp in splits for s in seeds]
    rows = run_parallel("_clip_run", jobs)
    result = {
        "recipe": {
            **recipes.TINY_CLIP_TRAINING,
            "seed": list(seeds),
            "split": list(splits),
            **({"steps": steps} if steps else {}),
        },
        "rows": rows,
        "summary": summarise(rows, ["seen", "heldout"]),
        "wall_seconds": time.perf_counter() - start,
    }
    if not steps:  # the zoo's recipe, as it is
        result["recipes"] = recipe_keys("clip")
    print_table(
        f"the tiny CLIP over {len(seeds)} seeds x {len(splits)} splits "
        f"({result['recipe']['steps']} steps, {result['wall_seconds']:.0f} s wall)",
        result["summary"],
        CLIP_GOALS,
    )
    return result


# ---------------------------------------------------------------------------------------------
# VQGAN+CLIP over generation seeds and prompt sets
# ---------------------------------------------------------------------------------------------


def _generate_run(seed: int, prompt_set: int, steps: int | None = None, prompts: int = 0) -> dict:
    import torch

    from mmlib import generate, judge

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    settings = {**recipes.generation_settings("tiny"), "seed": seed}
    if steps:
        settings["steps"] = steps
    pairs = judge.benchmark_pairs(prompt_set=prompt_set)
    if prompts:
        pairs = pairs[:: max(1, len(pairs) // prompts)][:prompts]
    config = generate.GenerateConfig(**settings)
    run = generate.run_benchmark(
        zoo.get_vqgan("tiny", device="cpu"),
        zoo.get_generation_clips("tiny", device="cpu"),
        tiny_models.get_judges(device="cpu"),
        pairs,
        config,
        best_of=recipes.VQGAN_CLIP_BEST_OF,
        progress=False,
        device="cpu",
    )
    row = {"seed": seed, "prompt_set": prompt_set, "seconds": run["seconds"]}
    for name in ("judge_clip", "classifier"):
        split = judge.fractions_by_split(run[name]["correct"], pairs)
        row[name] = split["all"]
        row[f"{name}_seen"], row[f"{name}_heldout"] = split["seen"], split["heldout"]
    return row


def generate_spread(
    seeds=(0, 1, 2), prompt_sets=(0, 1), steps: int | None = None, prompts: int = 0
) -> dict:
    """Run VQGAN+CLIP's benchmark for every (seed, prompt set) with the prepared tiny models."""
    start = time.perf_counter()
    jobs = [
        {"seed": s, "prompt_set": p, "steps": steps, "prompts": prompts}
        for p in prompt_sets
        for s in seeds
    ]
    rows = run_parallel("_generate_run", jobs)
    keys = [
        f"{j}{part}" for j in ("judge_clip", "classifier") for part in ("", "_seen", "_heldout")
    ]
    result = {
        "settings": {**recipes.generation_settings("tiny"), **({"steps": steps} if steps else {})},
        "best_of": recipes.VQGAN_CLIP_BEST_OF,
        "rows": rows,
        "summary": summarise(rows, keys),
        "wall_seconds": time.perf_counter() - start,
    }
    if not steps and not prompts:
        result["recipes"] = recipe_keys("generate")
    print_table(
        f"VQGAN+CLIP over {len(seeds)} seeds x {len(prompt_sets)} prompt sets "
        f"({result['wall_seconds']:.0f} s wall)",
        result["summary"],
        GENERATE_GOALS,
    )
    return result


# ---------------------------------------------------------------------------------------------
# The DALL-E-style token model over training seeds, prompt sets and sampling seeds
# ---------------------------------------------------------------------------------------------


def _dalle_run(
    seed: int, prompt_sets: list, sampling_seeds: list, steps: int | None = None, n: int = 8
) -> list[dict]:
    import torch

    from mmlib import dalle, dalle_training, judge
    from mmlib.transformer import TransformerConfig

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    training = dalle_training.DalleTrainConfig(seed=seed, **({"steps": steps} if steps else {}))
    vqgan = zoo.get_vqgan("tiny", device="cpu")
    model, history = dalle_training.train_dalle(
        TransformerConfig(),
        training,
        vqgan,
        tiny_models.tiny_tokenizer(),
        progress=False,
        device="cpu",
    )
    clips, judges = (
        zoo.get_generation_clips("tiny", device="cpu"),
        tiny_models.get_judges(device="cpu"),
    )
    rows = []
    for p in prompt_sets:
        for s in sampling_seeds:
            ev = dalle.evaluate_dalle(
                model,
                vqgan,
                clips,
                judges,
                pairs=judge.benchmark_pairs(prompt_set=p),
                n=n,
                seed=s,
                **dalle.SAMPLING,
            )
            row = {
                "train_seed": seed,
                "prompt_set": p,
                "sampling_seed": s,
                "train_seconds": history.last("seconds"),
            }
            for way in ("first", "reranked"):
                for name, fr in ev[way].items():
                    for part in ("seen", "heldout"):
                        row[f"{way}_{name}_{part}"] = fr[part]
            rows.append(row)
    return rows


def dalle_spread(
    seeds=(0, 1, 2),
    prompt_sets=(0, 1),
    sampling_seeds=(0, 1),
    steps: int | None = None,
    n: int = 8,
) -> dict:
    """Train the token model recipe for every seed, then judge its best of `n` samples for
    every prompt set and sampling seed."""
    start = time.perf_counter()
    jobs = [
        {
            "seed": s,
            "prompt_sets": list(prompt_sets),
            "sampling_seeds": list(sampling_seeds),
            "steps": steps,
            "n": n,
        }
        for s in seeds
    ]
    rows = [row for rows in run_parallel("_dalle_run", jobs) for row in rows]
    keys = [
        f"{w}_{j}_{p}"
        for w in ("reranked", "first")
        for j in ("judge_clip", "classifier")
        for p in ("seen", "heldout")
    ]
    by_set = {
        f"prompt set {p}": summarise([r for r in rows if r["prompt_set"] == p], keys[:4])
        for p in prompt_sets
    }
    from mmlib import dalle, dalle_training

    result = {
        "training": {
            **asdict(dalle_training.DalleTrainConfig()),
            **({"steps": steps} if steps else {}),
        },
        "sampling": dalle.SAMPLING,  # not in the token model's key: checked by the tests
        "rows": rows,
        "summary": summarise(rows, keys),
        "by_prompt_set": by_set,
        "wall_seconds": time.perf_counter() - start,
    }
    if not steps and n == 8:
        result["recipes"] = recipe_keys("dalle")
    print_table(
        f"the token model over {len(seeds)} training seeds x {len(prompt_sets)} prompt sets x "
        f"{len(sampling_seeds)} sampling seeds ({result['wall_seconds']:.0f} s wall)",
        result["summary"],
        DALLE_GOALS,
    )
    for name, summary in by_set.items():
        print_table(f"  {name}", summary, DALLE_GOALS)
    return result


# ---------------------------------------------------------------------------------------------
# unCLIP (prior + diffusion decoder) over training seeds and prompt sets
# ---------------------------------------------------------------------------------------------


# Pictures per benchmark pair in unCLIP's spread: 8 (576 seen verdicts behind each figure, over
# 3 seeds x 2 prompt sets x 12 pairs), enough to tell apart ways that differ by a few points;
# docs/unclip-recipe.md, "The oracle, chosen as the prior is", has the standard error.
UNCLIP_PICTURES = 8


def _unclip_run(
    seed: int,
    prompt_sets: list,
    prior_steps: int | None = None,
    decoder_steps: int | None = None,
    n: int = UNCLIP_PICTURES,
    scenes: int | None = None,
) -> list[dict]:
    import torch

    from mmlib import judge, unclip, unclip_training

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    clip, vqgan = zoo.get_clip("tiny", device="cpu"), zoo.get_vqgan("tiny", device="cpu")
    fewer = {"n_scenes": scenes} if scenes else {}
    prior_config = unclip_training.PriorTrainConfig(
        seed=seed, **({"steps": prior_steps} if prior_steps else {}), **fewer
    )
    decoder_config = unclip_training.DecoderTrainConfig(
        seed=seed, **({"steps": decoder_steps} if decoder_steps else {}), **fewer
    )
    prior, prior_history = unclip_training.train_prior(
        clip, prior_config, progress=False, device="cpu"
    )
    decoder, decoder_history = unclip_training.train_decoder(
        clip, vqgan, decoder_config, progress=False, device="cpu"
    )
    model = unclip.UnCLIP(clip, prior, decoder, vqgan)
    judges = tiny_models.get_judges(device="cpu")
    rows = []
    for p in prompt_sets:
        pairs = judge.benchmark_pairs(prompt_set=p)
        ev = unclip.evaluate_unclip(model, judges, pairs=pairs, n=n, seed=seed)
        row = {
            "train_seed": seed,
            "prompt_set": p,
            "prior_seconds": prior_history.last("seconds") + prior_history.last("data_seconds"),
            "decoder_seconds": decoder_history.last("seconds")
            + decoder_history.last("data_seconds"),
            **{f"cosine_{k}": v for k, v in unclip.prior_cosines(model, pairs, n, seed).items()},
        }
        for way in (*unclip.WAYS, "ceiling"):
            for name, fr in ev[way].items():
                for part in ("seen", "heldout"):
                    row[f"{way}_{name}_{part}"] = fr[part]
        rows.append(row)
    return rows


def unclip_summary(rows: list[dict], keys: list[str]) -> dict[str, dict[str, float]]:
    """Return `summarise` of unCLIP's rows, each held-out figure over the first prompt set's
    rows only: every prompt set ends with the same 8 held-out pairs, drawn with the same seeds,
    so the other sets' held-out figures repeat those pictures' verdicts."""
    first = [r for r in rows if r["prompt_set"] == rows[0]["prompt_set"]]
    seen = summarise(rows, [k for k in keys if not k.endswith("_heldout")])
    held = summarise(first, [k for k in keys if k.endswith("_heldout")])
    return {k: (seen | held)[k] for k in keys if k in seen or k in held}


def unclip_spread(
    seeds=(0, 1, 2),
    prompt_sets=(0, 1),
    prior_steps: int | None = None,
    decoder_steps: int | None = None,
    n: int = UNCLIP_PICTURES,
    scenes: int | None = None,
) -> dict:
    """Train unCLIP's prior and decoder for every seed, then judge n pictures per benchmark pair
    for every prompt set and every way of feeding the decoder (`unclip.WAYS`). `prior_steps`,
    `decoder_steps`, `scenes` (training scenes of each): other than the recipe's, for a quick
    form."""
    from mmlib import unclip, unclip_training

    start = time.perf_counter()
    jobs = [
        {
            "seed": s,
            "prompt_sets": list(prompt_sets),
            "prior_steps": prior_steps,
            "decoder_steps": decoder_steps,
            "n": n,
            "scenes": scenes,
        }
        for s in seeds
    ]
    rows = [row for rows in run_parallel("_unclip_run", jobs) for row in rows]
    keys = [
        f"{w}_{j}_{p}"
        for w in (*unclip.WAYS, "ceiling")
        for j in ("judge_clip", "classifier")
        for p in ("seen", "heldout")
    ]
    cosines = ["cosine_true", "cosine_unrelated", "cosine_chance"]
    result = {
        "training": {
            "prior": {
                **asdict(unclip_training.PriorTrainConfig()),
                **({"steps": prior_steps} if prior_steps else {}),
            },
            "decoder": {
                **asdict(unclip_training.DecoderTrainConfig()),
                **({"steps": decoder_steps} if decoder_steps else {}),
            },
        },
        "sampling": {
            "prior": unclip.PRIOR_SAMPLING,
            "decoder": unclip.DECODER_SAMPLING,
            "decoder_predicts": unclip.DECODER_PREDICTS,
            "latent_clip": unclip.LATENT_CLIP,
        },
        "n": n,
        "rows": rows,
        "summary": unclip_summary(rows, keys),
        "cosines": summarise(rows, cosines),
        "seconds": summarise(rows, ["prior_seconds", "decoder_seconds"]),
        "wall_seconds": time.perf_counter() - start,
    }
    if not prior_steps and not decoder_steps and not scenes and n == UNCLIP_PICTURES:
        result["recipes"] = recipe_keys("unclip")
    print_table(
        f"unCLIP over {len(seeds)} training seeds x {len(prompt_sets)} prompt sets, {n} pictures "
        f"per pair ({result['wall_seconds']:.0f} s wall)",
        result["summary"],
        UNCLIP_GOALS,
    )
    goals = ", ".join(f"{k} {v}" for k, v in UNCLIP_COSINE_GOALS.items())
    print(f"  prior's cosine to image embeddings (goals: {goals})")
    for key, s in result["cosines"].items():
        print(f"  {key:<34} {s['mean']:6.3f} {s['min']:6.3f} {s['max']:6.3f}  {s['n']:>4}")
    for key, s in result["seconds"].items():
        print(f"  {key:<34} {s['mean']:6.1f} {s['min']:6.1f} {s['max']:6.1f}  {s['n']:>4}")
    print_order(unclip_order(rows))
    return result


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    task, kwargs = argv[0], json.loads(argv[1])
    print(json.dumps(globals()[task](**kwargs)))


if __name__ == "__main__":
    main()
