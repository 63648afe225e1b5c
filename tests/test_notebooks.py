"""Every course notebook runs top to bottom in the tiny profile twice: as shipped (its fill-in
cells blank, mmlib's versions standing in) and with every solution filled in (each check must
find it right). Every number its text states is printed by the notebook or cites its source."""

import json
import re

import pytest

from mmlib.tools.runner import (
    EXECUTED_DIR,
    course_notebooks,
    fill_in_names,
    read_solutions,
    record_time,
    run_notebook,
    solutions_file,
)

NOTEBOOKS = course_notebooks()


def _load(path):
    return json.loads(path.read_text())


def test_there_are_notebooks_and_they_are_in_order():
    names = [p.name for p in NOTEBOOKS]
    assert names and names[0] == "00_setup.ipynb" and names == sorted(names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path):
    for i, cell in enumerate(_load(path)["cells"]):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{path.name} cell {i} holds outputs"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} was executed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_follows_the_course_conventions(path):
    nb = _load(path)
    text = ["".join(c["source"]) for c in nb["cells"]]
    assert "colab.research.google.com/github/" in text[0] and path.name in text[0]
    assert any('"google.colab" in sys.modules' in t and "%pip install" in t for t in text)
    params = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1 and 'PROFILE = "tiny"' in "".join(params[0]["source"])
    assert "## Exercises" in text[-1], "each notebook ends with exercises"
    assert nb["cells"][0]["cell_type"] == "markdown"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_solutions_are_kept_apart_and_cover_every_fill_in(path):
    nb = _load(path)
    text = "\n".join("".join(c["source"]) for c in nb["cells"])
    assert "<details>" not in text, "solutions live in notebooks/solutions/, not under the exercise"
    fill_ins, exercises = read_solutions(solutions_file(path))
    assert exercises, f"{solutions_file(path).name} answers no exercise"
    names = fill_in_names(nb)
    assert set(names) == set(fill_ins), f"fill-ins {names}, solutions for {sorted(fill_ins)}"
    assert solutions_file(path).name in text, "the notebook links its solutions file"
    if not path.name.startswith("00_"):  # every lesson has the learner write its core lines
        assert names, f"{path.name} has no fill-in cell"
    for name in names:  # the cell after a fill-in checks it, and the notebook goes on with it
        k = next(
            i
            for i, c in enumerate(nb["cells"])
            if f"fill-in:{name}" in c["metadata"].get("tags", [])
        )
        cell = nb["cells"][k]
        assert cell["cell_type"] == "code" and "..." in "".join(cell["source"]), name
        assert f"{name} = check(" in "".join(nb["cells"][k + 1]["source"])


PERCENT = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?%")
CITATION = re.compile(
    r"et al\.?,? \(?\d{4}|\bFig(?:ure)?\.? ?\d|\bTable \d|§ ?\d|arXiv|\(cited\)", re.I
)


def unsupported_percentages(executed: dict) -> list[str]:
    """Return the percentages in markdown that no output of the notebook prints and that no
    citation in the same cell backs (a paper, figure, table or section, or '(cited)')."""
    printed = []
    for cell in executed["cells"]:
        for out in cell.get("outputs", []):
            text = out.get("text") or out.get("data", {}).get("text/plain", "")
            printed.append("".join(text) if isinstance(text, list) else str(text))
    printed = "\n".join(printed)
    wrong = []
    for cell in executed["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"])
        text = re.sub(r"<details>.*?</details>", "", text, flags=re.S)  # solutions are code
        if CITATION.search(text):
            continue
        for number in PERCENT.findall(text):
            if not re.search(rf"(?<![\d.]){re.escape(number)}\s?%", printed):
                wrong.append(f"{number}% in: {text[:80]!r}")
    return wrong


def test_the_percentage_check_catches_a_typed_number_and_accepts_printed_or_cited_ones():
    nb = {
        "cells": [
            {"cell_type": "markdown", "source": ["The model gets 93% right."]},
            {"cell_type": "markdown", "source": ["CLIP reached 76.2% (Radford et al., 2021)."]},
            {"cell_type": "code", "source": [], "outputs": [{"text": "accuracy: 88%"}]},
            {"cell_type": "markdown", "source": ["As printed above, 88% of them."]},
        ]
    }
    assert unsupported_percentages(nb) == ["93% in: 'The model gets 93% right.'"]


@pytest.mark.notebook
@pytest.mark.parametrize("solved", [False, True], ids=["as-shipped", "solved"])
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_the_tiny_profile(path, solved, tmp_path):
    # as shipped, the executed copy is kept for `make site`; solved, it is thrown away
    run = run_notebook(path, tmp_path if solved else EXECUTED_DIR, profile="tiny", solutions=solved)
    print(f"\n{run.summary()}{'  (solved)' if solved else ''}")
    if not solved:
        record_time(run)  # for the instructor guide's table (scripts/notebook_times.py)
    assert run.error is None
    executed = _load(run.output)
    errors = [
        o
        for c in executed["cells"]
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
    assert run.figures, f"{path.name} reports no key figure"
    pictures = [
        o
        for c in executed["cells"]
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert pictures, f"{path.name}'s executed copy holds no figure (the site would show none)"
    assert not unsupported_percentages(executed), "numbers typed into the text, not computed"


def test_the_runner_finds_the_notebooks_without_the_source_checkout(tmp_path, monkeypatch):
    # An installed wheel holds no notebooks: the runner looked beside its own source before
    from mmlib.tools import runner

    wheel = tmp_path / "venv" / "site-packages" / "mmlib" / "tools" / "runner.py"
    monkeypatch.setattr(runner, "__file__", str(wheel))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(runner.NOTEBOOKS_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=runner.NOTEBOOKS_ENV):
        runner.notebooks_dir()
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "00_setup.ipynb").write_text("{}")
    assert runner.notebooks_dir() == tmp_path / "notebooks"  # the course's folder, as cwd
    monkeypatch.setenv(runner.NOTEBOOKS_ENV, str(tmp_path / "elsewhere"))
    assert runner.notebooks_dir() == tmp_path / "elsewhere"
