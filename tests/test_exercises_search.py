"""Notebook 03's fill-in, exact top-k: the solution passes, a blank one is said blank, and each
likely slip is named in one line."""

import json

import pytest
import torch
import torch.nn.functional as F

from mmlib.exercises import core
from mmlib.exercises.search import TOP_K, exact_search
from mmlib.tools.runner import notebooks_dir, read_solutions, solutions_file

NOTEBOOK = notebooks_dir() / "03_image_search.ipynb"


def _defined_by(code):
    """The function a cell's code defines, run with the notebook's imports (torch, F)."""
    names = {"torch": torch, "F": F}
    exec(code, names)
    return names[TOP_K.name]


def _says(start):
    return next(m.says for m in TOP_K.mistakes if m.says.startswith(start))


def _argsort(descending=True, last=False, normalise=True):
    def top_k(query, vectors, k):
        scores = vectors @ (query / query.norm() if normalise else query)
        order = scores.argsort(descending=descending)
        rows = order[-k:] if last else order[:k]
        return scores[rows], rows

    return top_k


def test_the_solutions_file_answer_is_right():
    fill_ins, _ = read_solutions(solutions_file(NOTEBOOK))
    assert core.verdict(TOP_K, _defined_by(fill_ins[TOP_K.name])).status == "right"


def test_an_argsort_answer_is_right_too():
    assert core.verdict(TOP_K, _argsort()).status == "right"


def test_the_cell_as_shipped_is_blank():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    tag = "fill-in:" + TOP_K.name
    (code,) = ["".join(c["source"]) for c in cells if tag in c["metadata"].get("tags", [])]
    assert core.verdict(TOP_K, _defined_by(code)).status == "blank"


@pytest.mark.parametrize(
    "wrong,says",
    [
        (_argsort(descending=False), _says("these are the k worst rows")),
        (_argsort(descending=False, last=True), _says("the right k rows, but the worst")),
        (_argsort(normalise=False), _says("the scores are not cosines")),
        (lambda q, v, k: exact_search(q, v, k)[::-1], _says("the rows come before")),
        (lambda q, v, k: exact_search(q, v, k)[1], _says("only the rows")),
    ],
    ids=["ascending", "best last", "query not normalised", "rows first", "rows only"],
)
def test_a_known_slip_is_named(wrong, says):
    found = core.verdict(TOP_K, wrong)
    assert found.status == "wrong" and found.line.endswith(says)


def test_an_unknown_slip_gets_a_generic_one_line_finding():
    found = core.verdict(TOP_K, lambda q, v, k: exact_search(q, v, k)[0])  # the scores alone
    assert found.status == "wrong" and "should be 2 values, got 1" in found.line
    assert "\n" not in found.line
