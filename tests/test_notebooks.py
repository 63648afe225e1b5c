"""Every course notebook runs top to bottom in the tiny profile, with its exercise solutions."""

import json

import pytest

from mmlib.course import course_notebooks, run_notebook, solution_code

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
    assert "## Exercises" in text[-1] and solution_code(nb), "each notebook ends with exercises"
    assert nb["cells"][0]["cell_type"] == "markdown"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_the_tiny_profile(path, tmp_path):
    run = run_notebook(path, tmp_path, profile="tiny", solutions=True)
    print(f"\n{run.summary()}")
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
