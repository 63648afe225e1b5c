"""The instructor guide and the notebooks' "Time:" lines say what the last measurement says
(docs/measurements.json, made by scripts/notebook_times.py from a `make test` run)."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location(
    "notebook_times", ROOT / "scripts" / "notebook_times.py"
)
notebook_times = importlib.util.module_from_spec(spec)
spec.loader.exec_module(notebook_times)


def test_every_notebook_is_measured_and_its_time_line_says_so():
    measured = json.loads(notebook_times.MEASURED.read_text())
    names = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(measured["notebooks"]) == names == sorted(notebook_times.READING)
    for name in names:
        nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
        first = "".join(nb["cells"][0]["source"])
        assert notebook_times.time_line(name, measured) in first, name


def test_the_guide_s_table_is_the_one_generated_from_the_measurements():
    measured = json.loads(notebook_times.MEASURED.read_text())
    guide = notebook_times.GUIDE.read_text()
    assert notebook_times.tables(measured) in guide
    assert "90 minutes" in guide and "mmlib zoo import" in guide
