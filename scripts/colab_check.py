"""Does installing the course on Colab leave Colab alone? A check that imitates a Colab VM.

1. Build a Python 3.13 venv (build/colab-venv) holding Colab's own versions (scripts/colab-runtime.txt,
   from googlecolab/backend-info) of every package the course's install touches, plus the pins a
   notebook depends on (ipywidgets 7.7.1, ipython 7.34, ipykernel 6.17, notebook 6.5, torch 2.11).
2. Run the install commands of notebook 00's first cell exactly (the git URL replaced by this
   checkout) and fail when any package Colab pins changes version, or when the install adds a
   package a Colab notebook never needs (JupyterLab, pytest, ruff, papermill, pytorch-lightning).
3. From a folder outside the checkout (so only the installed wheel can be imported, as on
   Colab): import mmlib, run `mmlib doctor` and notebook 00 (the models come from MMLIB_HOME:
   nothing trains).
4. Run the widget tests there (ipywidgets 7.7.1), or with --unit the whole unit suite
   (Python 3.13).

    python scripts/colab_check.py [--unit] [--keep]

The venv (about 5 GB) is removed afterwards unless --keep.

Prints one line per step with its time; exit status 1 with the reason when a check fails.
Needs python3.13 (pyenv's is found too) and the package index (about 3 GB of downloads the
first time: Colab's CUDA build of torch; pip's cache keeps them for the next run).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINS = Path(__file__).with_name("colab-runtime.txt")
VENV = ROOT / "build" / "colab-venv"
NOTEBOOK = ROOT / "notebooks" / "00_setup.ipynb"
# What a notebook stands on in Colab, installed even if the course did not touch it.
NOTEBOOK_PINS = (
    "ipywidgets widgetsnbextension jupyterlab_widgets ipython ipython-genutils ipykernel "
    "notebook jupyter_client jupyter_core tornado traitlets numpy torch torchvision nbformat "
    "nbclient matplotlib pillow"
).split()
# Packages a Colab notebook of this course never needs: the install must not add them.
NEVER = {"jupyterlab", "pytest", "ruff", "papermill", "pytorch-lightning", "lightning"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def colab_pins() -> dict[str, str]:
    """Return {normalised name: version} of Colab's freeze (local versions like +cu128 dropped).

    The CUDA runtime packages (nvidia-*, cuda-*) are left out: Colab's torch is a CUDA 12.8
    build that PyPI does not serve, and PyPI's torch of the same version brings its own.
    """
    pins = {}
    for line in PINS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            if not norm(name).startswith(("nvidia-", "cuda-")):
                pins[norm(name)] = version.split("+")[0].strip()
    return pins


def find_python313() -> str:
    found = shutil.which("python3.13")
    candidates = sorted(Path.home().glob(".pyenv/versions/3.13*/bin/python3.13"))
    for path in ([found] if found else []) + [str(c) for c in candidates]:
        ok = subprocess.run(
            [path, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True
        )
        if ok.returncode == 0 and b"(3, 13)" in ok.stdout:
            return path
    raise SystemExit(
        "colab check: no Python 3.13 here (Colab runs 3.13); install it (pyenv install 3.13)"
    )


def cell_commands() -> list[list[str]]:
    """Return the pip arguments of notebook 00's install cell, with this checkout for the URL."""
    nb = json.loads(NOTEBOOK.read_text())
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and '"google.colab" in sys.modules' in source:
            commands = []
            for line in source.splitlines():
                line = line.strip()
                if line.startswith("%pip install"):
                    args = line[len("%pip install") :].split()
                    args = [a.strip('"') for a in _join_quoted(args)]
                    args = [str(ROOT) if a.startswith("mmlib @ git+") else a for a in args]
                    commands.append(args)
            if commands:
                return commands
    raise SystemExit(f"colab check: no '%pip install' cell guarded for Colab in {NOTEBOOK.name}")


def _join_quoted(words: list[str]) -> list[str]:
    """Join shell words split inside double quotes ("mmlib @ git+...")."""
    out, buf = [], None
    for w in words:
        if buf is not None:
            buf += " " + w
            if w.endswith('"'):
                out.append(buf)
                buf = None
        elif w.startswith('"') and not (w.endswith('"') and len(w) > 1):
            buf = w
        else:
            out.append(w)
    return out


class Step:
    def __init__(self, name: str):
        self.name, self.start = name, time.perf_counter()

    def done(self, note: str = "") -> None:
        print(
            f"colab check: {self.name:<44} {time.perf_counter() - self.start:6.1f} s  {note}",
            flush=True,
        )


def run(cmd, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"colab check: failed: {' '.join(map(str, cmd))[:300]}")
    return done


def freeze(python: Path) -> dict[str, str]:
    out = run([python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"]).stdout
    return {norm(p["name"]): p["version"] for p in json.loads(out)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unit", action="store_true", help="run the whole unit suite there")
    parser.add_argument(
        "--keep", action="store_true", help="reuse build/colab-venv if present, and keep it after"
    )
    args = parser.parse_args()
    try:
        return check(args)
    finally:
        if not args.keep:  # 5 GB (Colab's CUDA torch): nothing after the check needs it
            shutil.rmtree(VENV, ignore_errors=True)


def check(args: argparse.Namespace) -> int:
    pins = colab_pins()
    python = VENV / "bin" / "python"
    pip = [python, "-m", "pip", "--disable-pip-version-check"]
    constraints = ROOT / "build" / "colab-constraints.txt"

    step = Step("venv with Colab's versions")
    if not (args.keep and python.exists()):
        shutil.rmtree(VENV, ignore_errors=True)
        run([find_python313(), "-m", "venv", VENV])
        constraints.parent.mkdir(parents=True, exist_ok=True)
        constraints.write_text("".join(f"{n}=={v}\n" for n, v in sorted(pins.items())))
        report = ROOT / "build" / "colab-resolve.json"
        # which packages would the course's install touch? (resolved as on Colab, no install)
        names = []
        for cmd in cell_commands():
            run(
                pip
                + [
                    "install",
                    "--dry-run",
                    "--ignore-installed",
                    "--report",
                    report,
                    "-q",
                    "-c",
                    constraints,
                ]
                + [a for a in cmd if a != "-q"]
            )
            names += [
                norm(i["metadata"]["name"]) for i in json.loads(report.read_text())["install"]
            ]
        base = sorted({n for n in names if n in pins} | {norm(n) for n in NOTEBOOK_PINS})
        run(pip + ["install", "-q", "-c", constraints] + [f"{n}=={pins[n]}" for n in base])
    before = freeze(python)
    step.done(f"{len(before)} packages, ipywidgets {before.get('ipywidgets')}")

    step = Step("install as notebook 00's cell does")
    for cmd in cell_commands():
        run(pip + ["install"] + cmd)
    after = freeze(python)
    changed = {
        n: (before[n], after.get(n)) for n in before if n in pins and after.get(n) != before[n]
    }
    added = sorted(set(after) - set(before))
    step.done(f"added {len(added)}: {', '.join(added)}")
    if changed:
        raise SystemExit(f"colab check: the install changed Colab's packages: {changed}")
    if NEVER & set(added):
        raise SystemExit(
            f"colab check: the install adds {sorted(NEVER & set(added))}, which a "
            f"Colab notebook does not need"
        )

    # From a folder outside the checkout, so that Python finds mmlib only where pip put it
    # (`python -c` puts the working folder first on sys.path): the installed wheel, as on Colab.
    step = Step("from the installed wheel: import mmlib, mmlib doctor, notebook 00")
    env = {**os.environ, "MMLIB_NO_TRAINING": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    out = ROOT / "build" / "colab-notebooks"
    out.mkdir(parents=True, exist_ok=True)
    code = "import mmlib, mmlib.zoo, mmlib.widgets, mmlib.course; print(mmlib.__file__)"
    where = Path(run([python, "-c", code], cwd=out).stdout.strip().splitlines()[-1])
    if not where.resolve().is_relative_to(VENV.resolve()):
        raise SystemExit(f"colab check: mmlib was imported from {where}, not the installed wheel")
    run([VENV / "bin" / "mmlib", "doctor"], env=env, cwd=out)
    run(pip + ["install", "-q", "papermill", "-c", constraints])  # the harness, not the course
    code = (
        f"from mmlib.tools.runner import run_notebook; r = run_notebook({str(NOTEBOOK)!r}, "
        f"{str(out)!r}, 'tiny'); print(r.summary())"
    )
    step.done(run([python, "-c", code], env=env, cwd=out).stdout.strip().splitlines()[-1])

    step = Step("unit tests on Python 3.13" if args.unit else "widget tests under ipywidgets 7")
    run(
        pip
        + ["install", "-q", "pytest", "pytest-timeout", "hypothesis", "pyyaml", "-c", constraints]
    )
    selection = ["-m", "not notebook"] if args.unit else ["-m", "widgets"]
    tests = run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection],
        env={**env, "MMLIB_NO_TRAINING": "0"},
        cwd=ROOT,
    )
    step.done(tests.stdout.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
