"""The spread of the course's results: each quality figure measured over several training seeds,
held-out splits, prompt sets and sampling seeds, reported as mean, min and max.

One run is one draw: a recipe's held-out accuracy can move by tens of points between seeds and
splits (docs/clip-recipe.md), so the course states only what the spread supports. This module
is what the notebooks read: the course's goals, the full measurements that ship with mmlib
(mmlib/data/spread/, `cached`) and the table they print. `mmlib bench train|generate|dalle|unclip`
make those measurements (`mmlib.tools.spread_runs`).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from importlib import resources

from mmlib import zoo


def summarise(rows: list[dict], keys: list[str]) -> dict[str, dict[str, float]]:
    """Return {key: {"mean", "min", "max", "n"}} over the rows that have the key."""
    out = {}
    for key in keys:
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            out[key] = {
                "mean": statistics.fmean(values),
                "min": min(values),
                "max": max(values),
                "n": len(values),
            }
    return out


def print_table(title: str, summary: dict, goals: dict | None = None) -> None:
    """Print one line per figure: mean, min, max (and the goal when there is one)."""
    print(title)
    print(f"  {'figure':<34} {'mean':>6} {'min':>6} {'max':>6}  runs  goal")
    for key, s in summary.items():
        goal = (goals or {}).get(key, "")
        print(f"  {key:<34} {s['mean']:6.1%} {s['min']:6.1%} {s['max']:6.1%}  {s['n']:>4}  {goal}")


def goal_values(goals: dict[str, str]) -> dict[str, float]:
    """Return each goal's first percentage as a fraction (">= 85% mean, ..." -> 0.85): the
    line `plots.spread` draws."""
    values = {}
    for key, text in goals.items():
        match = re.search(r"(\d+(?:\.\d+)?)\s*%", text)
        if match is None:
            raise ValueError(f"goal {key!r} has no percentage: {text!r}")
        values[key] = float(match.group(1)) / 100
    return values


# What each measurement depends on: the zoo folders (named by their cache keys) of the models
# and results whose recipes it measures. A full measurement records their names ("recipes"), so
# a test can tell when the spread that ships with mmlib no longer measures today's recipes.
MEASURES = {
    "clip": ("tiny-clip",),
    "generate": ("vqgan-clip-results",),  # its key holds the CLIPs', VQGAN's and judges' keys
    "dalle": ("tiny-dalle", "tiny-clip", "tiny-clip-b", "judge-clip", "judge-classifier"),
    "unclip": ("unclip-prior", "unclip-decoder", "judge-clip", "judge-classifier"),
}
BENCH_OF = {"clip": "train", "generate": "generate", "dalle": "dalle", "unclip": "unclip"}


def recipe_keys(name: str) -> dict[str, str]:
    """Return {model: folder name} of what measurement `name` depends on, as the code is now."""
    folders = zoo.tiny_folders()
    return {model: folders[model].name for model in MEASURES[name]}


def cached(name: str) -> dict:
    """Return the full spread measurement `name` ("clip", "generate", "dalle", "unclip") that
    ships with mmlib (mmlib/data/spread/NAME.json: made by `mmlib bench ...` without --quick, on
    2 CPU cores; its "provenance" says when, where and from which commit)."""
    text = resources.files("mmlib").joinpath(f"data/spread/{name}.json").read_text()
    return json.loads(text)


# What the course aims for, per measurement (the notebooks draw these lines; the benches print them).
CLIP_GOALS = {"seen": ">= 95% every run", "heldout": ">= 85% mean, >= 75% every run"}


GENERATE_GOALS = {
    "judge_clip": ">= 80% mean, >= 70% every seed",
    "classifier": ">= 80% mean, >= 70% every seed",
}


DALLE_GOALS = {
    "reranked_judge_clip_seen": ">= 90% mean",
    "reranked_classifier_seen": ">= 90% mean",
    "reranked_judge_clip_heldout": ">= 60% mean",
    "reranked_classifier_heldout": ">= 60% mean",
}


UNCLIP_GOALS = {
    "oracle_judge_clip_seen": ">= 90% mean",
    "oracle_classifier_seen": ">= 90% mean",
    "prior_judge_clip_seen": ">= 85% mean, >= 75% every seed",
    "prior_classifier_seen": ">= 85% mean, >= 75% every seed",
    "prior_judge_clip_heldout": ">= 50% mean",
    "prior_classifier_heldout": ">= 50% mean",
}
UNCLIP_COSINE_GOALS = {"true": ">= 0.8 mean", "unrelated": "<= chance + 0.1"}
# The order of the paper's comparison on seen pairs, each way of feeding the decoder against the
# next (`unclip.WAYS`): (higher, relation, lower).
UNCLIP_ORDER = (("oracle", ">=", "prior"), ("prior", ">", "text"), ("text", ">", "zero"))


def unclip_order(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Return the evidence for UNCLIP_ORDER: for each step and judge ("oracle-prior_classifier"),
    the difference of the two ways' seen figures run by run, summarised as `summarise` does,
    plus "se", the standard error of the mean. Both ways of a run are judged on the same pairs
    with the same decoder noise, so a difference is paired: what the two ways share cancels out
    of it. The prompt sets of one training seed share its models, so "se" treats each seed's
    mean difference as one draw (nan with a single seed)."""
    keys, differences = [], [{"train_seed": row["train_seed"]} for row in rows]
    for high, _, low in UNCLIP_ORDER:
        for j in ("judge_clip", "classifier"):
            key = f"{high}-{low}_{j}"
            keys.append(key)
            for row, d in zip(rows, differences, strict=True):
                d[key] = row[f"{high}_{j}_seen"] - row[f"{low}_{j}_seen"]
    out = summarise(differences, keys)
    seeds = sorted({d["train_seed"] for d in differences})
    for key, s in out.items():
        by_seed = [
            statistics.fmean(d[key] for d in differences if d["train_seed"] == seed)
            for seed in seeds
        ]
        s["se"] = statistics.stdev(by_seed) / len(seeds) ** 0.5 if len(seeds) > 1 else float("nan")
    return out


def order_interval(mean: float, se: float) -> tuple[float, float]:
    """Return the interval of a difference's mean +- 2 standard errors (`unclip_order`); with a
    single seed (se nan), the mean alone."""
    return (mean, mean) if math.isnan(se) else (mean - 2 * se, mean + 2 * se)


def order_verdict(relation: str, mean: float, se: float) -> str:
    """Say whether a difference (`unclip_order`) shows `relation` (">" or ">=") of its two ways,
    given `order_interval`."""
    low, high = order_interval(mean, se)
    if relation == ">":
        return "met" if low > 0 else ("ahead within noise" if mean > 0 else "missed")
    return "met" if mean >= 0 else ("level: the interval holds 0" if high >= 0 else "missed")


def print_order(order: dict[str, dict[str, float]]) -> None:
    """Print `unclip_order`'s result: one line per step and judge, in percentage points, with
    the interval of the mean +- 2 standard errors and `order_verdict`'s word on the goal."""
    relations = {f"{high}-{low}": rel for high, rel, low in UNCLIP_ORDER}
    print("  the order on seen pairs: each way minus the next, run by run, in points")
    print(
        f"  {'difference':<34} {'mean':>6} {'min':>6} {'max':>6}  mean +- 2 s.e.  runs  goal: verdict"
    )
    for key, s in order.items():
        step = key.split("_", 1)[0]  # "oracle-prior"
        relation = relations[step]
        low, high = order_interval(s["mean"], s["se"])
        interval = (
            "   (one seed)  " if math.isnan(s["se"]) else f"[{100 * low:+5.1f}, {100 * high:+5.1f}]"
        )
        print(
            f"  {key:<34} {100 * s['mean']:+6.1f} {100 * s['min']:+6.1f} {100 * s['max']:+6.1f}"
            f"  {interval}  {s['n']:>4}  {step.replace('-', f' {relation} ')}: "
            f"{order_verdict(relation, s['mean'], s['se'])}"
        )
