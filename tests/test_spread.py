"""The spread measurements: summaries over runs, runs in parallel children, the shipped cache."""

import math

import pytest

from mmlib import spread
from mmlib.tools import spread_runs


def test_summaries_give_mean_min_max_over_the_runs_that_have_the_figure():
    rows = [{"seen": 1.0, "heldout": 0.5}, {"seen": 0.5, "heldout": None}, {"seen": 0.75}]
    s = spread.summarise(rows, ["seen", "heldout", "absent"])
    assert s["seen"] == {"mean": 0.75, "min": 0.5, "max": 1.0, "n": 3}
    assert s["heldout"]["n"] == 1 and "absent" not in s


def test_children_run_side_by_side_and_a_failing_one_says_what_failed(tmp_home):
    rows = spread_runs.run_parallel(
        "_clip_run", [{"seed": 0, "split": "heldout", "steps": 2}], lanes=1
    )
    assert rows[0]["split"] == "heldout" and 0 <= rows[0]["heldout"] <= 1
    with pytest.raises(RuntimeError, match="_clip_run"):
        spread_runs.run_parallel("_clip_run", [{"seed": 0, "split": "nonsense", "steps": 2}])


def test_the_cached_measurements_ship_with_mmlib_and_say_where_they_come_from():
    for name in spread.BENCH_OF:
        result = spread.cached(name)
        assert result["rows"] and result["summary"] and result["provenance"]["commit"]


def test_the_cached_measurements_measured_todays_recipes():
    # a recipe changed without its full bench re-run would leave the notebooks showing another
    # recipe's spread
    for name, bench in spread.BENCH_OF.items():
        assert spread.cached(name)["recipes"] == spread.recipe_keys(name), (
            f"mmlib/data/spread/{name}.json measured other recipes: run `mmlib bench {bench}` "
            f"and copy MMLIB_HOME/bench/{name}.json there"
        )
    from mmlib import dalle  # sampling decides the token model's figures, not its weights

    assert spread.cached("dalle")["sampling"] == dalle.SAMPLING, (
        "dalle.SAMPLING changed since mmlib/data/spread/dalle.json was measured: run "
        "`mmlib bench dalle` and copy MMLIB_HOME/bench/dalle.json there"
    )
    from mmlib import unclip  # likewise unCLIP's sampling, and what its decoder predicts

    shipped = spread.cached("unclip")["sampling"]
    assert shipped == {
        "prior": unclip.PRIOR_SAMPLING,
        "decoder": unclip.DECODER_SAMPLING,
        "decoder_predicts": unclip.DECODER_PREDICTS,
        "latent_clip": unclip.LATENT_CLIP,
    }, "unCLIP's sampling changed since mmlib/data/spread/unclip.json: run `mmlib bench unclip`"


def test_unclip_counts_its_held_out_pictures_once_however_many_prompt_sets():
    # every prompt set ends with the same held-out pairs, drawn with the same seeds
    rows = [
        {"prompt_set": p, "train_seed": s, "prior_x_seen": p + s, "prior_x_heldout": s}
        for s in (0, 1, 2)
        for p in (0, 1)
    ]
    summary = spread_runs.unclip_summary(rows, ["prior_x_seen", "prior_x_heldout"])
    assert summary["prior_x_seen"]["n"] == 6 and summary["prior_x_heldout"]["n"] == 3
    assert summary["prior_x_heldout"]["mean"] == 1.0


def test_goal_values_read_each_goals_first_percentage():
    values = spread.goal_values({**spread.CLIP_GOALS, **spread.DALLE_GOALS})
    assert values["seen"] == 0.95 and values["heldout"] == 0.85
    assert values["reranked_judge_clip_heldout"] == 0.6
    with pytest.raises(ValueError, match="no percentage"):
        spread.goal_values({"x": "as good as possible"})


def test_unclip_order_takes_each_way_minus_the_next_run_by_run(capsys):
    ways = ("oracle", "prior", "text", "zero")
    # run r: oracle 0.9, prior 0.9 + 0.02 * r, text 0.5, zero 0.0, by both judges
    rows = [
        {"train_seed": r}
        | {
            f"{w}_{j}_seen": v
            for w, v in zip(ways, (0.9, 0.9 + 0.02 * r, 0.5, 0.0), strict=True)
            for j in ("judge_clip", "classifier")
        }
        for r in (0, 1, 2)
    ]
    order = spread.unclip_order(rows)
    assert [k.split("_", 1)[0] for k in order][::2] == ["oracle-prior", "prior-text", "text-zero"]
    first = order["oracle-prior_classifier"]
    assert first["mean"] == pytest.approx(-0.02) and first["min"] == pytest.approx(-0.04)
    assert first["se"] == pytest.approx(0.02 / 3**0.5)  # stdev 0.02 over 3 seeds
    assert order["text-zero_judge_clip"] == pytest.approx(
        {"mean": 0.5, "min": 0.5, "max": 0.5, "n": 3, "se": 0.0}
    )
    spread.print_order(order)
    assert "oracle >= prior: level: the interval holds 0" in capsys.readouterr().out
    # a second prompt set per seed, the same differences: a seed counts once in the error
    twice = spread.unclip_order(rows + [dict(r) for r in rows])
    assert twice["oracle-prior_classifier"]["n"] == 6
    assert twice["oracle-prior_classifier"]["se"] == pytest.approx(first["se"])
    assert math.isnan(spread.unclip_order(rows[:1])["oracle-prior_classifier"]["se"])


def test_the_order_verdict_asks_a_strict_step_to_clear_the_noise():
    assert spread.order_verdict(">", 0.05, 0.01) == "met"
    assert spread.order_verdict(">", 0.01, 0.01) == "ahead within noise"
    assert spread.order_verdict(">", -0.01, 0.01) == "missed"
    assert spread.order_verdict(">=", 0.0, 0.01) == "met"
    assert spread.order_verdict(">=", -0.01, 0.01) == "level: the interval holds 0"
    assert spread.order_verdict(">=", -0.05, 0.01) == "missed"
    assert spread.order_verdict(">=", -0.01, math.nan) == "missed"  # one seed: the mean alone
