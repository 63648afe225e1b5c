"""The repository's set-up files agree with each other and with the README."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower().replace("_", "-")


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_installs_the_same_set_as_pyproject():
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    wanted = {_norm(r) for r in project["dependencies"]}
    for name in extras["all"][0].split("[")[1].rstrip("]").split(","):
        wanted |= {_norm(r) for r in extras[name]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    got = {_norm(r) for r in pip if not r.startswith("-e")}
    assert got == wanted, (
        f"only in environment.yml: {got - wanted}; only in pyproject: {wanted - got}"
    )


def test_open_clip_is_pinned_to_the_3_3_series_and_torch_is_a_range():
    deps = {_norm(r) for r in _pyproject()["project"]["dependencies"]}
    assert "open-clip-torch>=3.3,<3.4" in deps
    assert not any(d.startswith("torch==") for d in deps), "Colab keeps its own torch"
    pins = (ROOT / "constraints.txt").read_text()
    assert "torch==2.14.1" in pins and "torchvision==0.29.1" in pins


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one():
    head = (ROOT / "README.md").read_text().split("\n## ")[0]
    assert "make course" in head and "make test" in head
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^course:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_licence_and_credits_are_there():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    readme = (ROOT / "README.md").read_text()
    for credited in ("OpenCLIP", "taming-transformers", "Credits"):
        assert credited in readme


def test_every_notebook_installs_only_the_core_on_colab_and_leaves_taming_s_extras_out():
    import json

    cells = set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
        install = [c for c in code if "%pip install" in c]
        assert len(install) == 1, f"{path.name}: one install cell"
        cells.add(install[0][install[0].index("import sys") :])  # after the notebook's parameters
    (cell,) = cells  # the same install in every notebook
    lines = [line.strip() for line in cell.splitlines() if "%pip" in line]
    assert lines == [
        '%pip install -q --no-deps "taming-transformers==0.0.1"',
        '%pip install -q "mmlib @ git+https://github.com/mmlib-course/mmlib"',
    ]
    assert 'if "google.colab" in sys.modules:' in cell


def test_the_core_needs_no_lab_test_or_lightning_packages_and_keeps_colab_s_widgets():
    deps = {
        _norm(r).split(">")[0].split("<")[0].split("=")[0]
        for r in _pyproject()["project"]["dependencies"]
    }
    assert not deps & {"jupyterlab", "papermill", "pytest", "ruff", "taming-transformers"}
    assert "ipywidgets>=7.6,<9" in {_norm(r) for r in _pyproject()["project"]["dependencies"]}
