"""Notebook 02's fill-in, the prompt ensemble: the solution passes, a blank one is said blank,
and each likely slip is named in one line."""

import json

import pytest
import torch
import torch.nn.functional as F

from mmlib.exercises import core
from mmlib.exercises.zeroshot import ENSEMBLE, WRONG_AXIS
from mmlib.tools.runner import notebooks_dir, read_solutions, solutions_file

NOTEBOOK = notebooks_dir() / "02_zero_shot_classification.ipynb"


def _cells():
    """The fill-in cell's code: {"right": as the solutions file completes it, "blank": as the
    notebook ships it}."""
    fill_ins, _ = read_solutions(solutions_file(NOTEBOOK))
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    tag = "fill-in:" + ENSEMBLE.name
    shipped = next("".join(c["source"]) for c in cells if tag in c["metadata"].get("tags", []))
    return {"right": fill_ins[ENSEMBLE.name], "blank": shipped}


def _ensemble(first=True, again=True, axis=1, columns=True):
    def ensemble(f):
        mean = (F.normalize(f, dim=-1) if first else f).mean(dim=axis)
        mean = F.normalize(mean, dim=-1) if again else mean
        return mean.T if columns else mean

    return ensemble


def _says(start):
    return next(m.says for m in ENSEMBLE.mistakes if m.says.startswith(start))


@pytest.mark.parametrize("status", ["right", "blank"])
def test_the_solved_cell_is_right_and_the_shipped_one_blank(status):
    names = {"torch": torch, "F": F}  # what the notebook imports above the cell
    exec(_cells()[status], names)
    assert core.verdict(ENSEMBLE, names[ENSEMBLE.name]).status == status


@pytest.mark.parametrize(
    "wrong,says",
    [
        (_ensemble(first=False), _says("the template embeddings are averaged before")),
        (_ensemble(again=False), _says("the average is not normalised again")),
        (_ensemble(columns=False), _says("the result is (classes, D)")),
        (_ensemble(axis=0), WRONG_AXIS),
        (_ensemble(axis=2), WRONG_AXIS),
    ],
    ids=["not normalised first", "not renormalised", "rows not columns", "axis 0", "axis 2"],
)
def test_a_known_slip_is_named(wrong, says):
    found = core.verdict(ENSEMBLE, wrong)
    assert found.status == "wrong" and found.line.endswith(says)


def test_an_unknown_slip_gets_a_generic_one_line_finding():
    found = core.verdict(ENSEMBLE, _ensemble(first=False, again=False))  # two slips at once
    assert found.status == "wrong" and "differs from mmlib's" in found.line
    assert "\n" not in found.line
