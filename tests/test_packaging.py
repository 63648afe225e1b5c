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
