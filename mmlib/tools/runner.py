"""Running the course: execute the notebooks in order into build/, one summary line each.

`make course`, `python -m mmlib course` and the notebook tests all go through `run_notebook`,
so what CI checks is what learners run.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mmlib.course import REPORT_ENV
from mmlib.exercises.core import STRICT_ENV

NOTEBOOKS_ENV = "MMLIB_NOTEBOOKS"


def notebooks_dir() -> Path:
    """Return the folder of the course notebooks: MMLIB_NOTEBOOKS if set, else notebooks/ in the
    working folder, else the source checkout's (an editable install). An installed wheel holds
    no notebooks, so from elsewhere a FileNotFoundError says where to run or what to set."""
    if os.environ.get(NOTEBOOKS_ENV):
        return Path(os.environ[NOTEBOOKS_ENV])
    for folder in (Path.cwd() / "notebooks", Path(__file__).resolve().parents[2] / "notebooks"):
        if any(folder.glob("[0-9][0-9]_*.ipynb")):
            return folder
    raise FileNotFoundError(
        f"no course notebooks in {Path.cwd() / 'notebooks'}: run from the course's folder (the "
        f"clone of the repository) or set {NOTEBOOKS_ENV} to the folder that holds them"
    )


def course_notebooks(folder: str | os.PathLike | None = None) -> list[Path]:
    """Return the course notebooks in order (their names start with a two-digit number)."""
    folder = Path(folder) if folder else notebooks_dir()
    if not folder.is_dir():
        raise FileNotFoundError(f"no notebooks folder at {str(folder)!r}")
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


SOLUTIONS_DIR = "solutions"  # beside the notebooks: solutions/NN_name.md, one file per notebook
FILL_IN = (
    "fill-in:"  # a fill-in cell's tag is "fill-in:NAME"; its solution's heading "Fill-in: NAME"
)
_SECTION = re.compile(r"^## (.+)$", re.MULTILINE)
_CODE = re.compile(r"```python\n(.*?)```", re.DOTALL)


def solutions_file(notebook: str | os.PathLike) -> Path:
    """Return the solutions file of a notebook: solutions/NN_name.md in the notebooks' folder."""
    notebook = Path(notebook)
    return notebook.parent / SOLUTIONS_DIR / f"{notebook.stem}.md"


def read_solutions(path: str | os.PathLike) -> tuple[dict[str, str], list[str]]:
    """Return ({fill-in name: its code}, [the exercises' solution code, in order]) of a solutions
    file: each "## Fill-in: NAME" section holds the code of that fill-in cell, every other
    "## ..." section the code of an exercise's solution (its ```python blocks)."""
    text = Path(path).read_text(encoding="utf-8")
    heads = list(_SECTION.finditer(text))
    fill_ins, exercises = {}, []
    for head, after in zip(heads, heads[1:] + [None], strict=True):
        body = text[head.end() : after.start() if after else len(text)]
        code = "\n".join(c.strip() for c in _CODE.findall(body)).strip()
        if not code:
            continue
        title = head.group(1).strip()
        if title.lower().startswith("fill-in:"):
            fill_ins[title.split(":", 1)[1].strip()] = code
        else:
            exercises.append(code)
    return fill_ins, exercises


def fill_in_names(notebook: dict) -> list[str]:
    """Return the names of a notebook's fill-in cells (tagged "fill-in:NAME"), in order."""
    return [
        tag[len(FILL_IN) :]
        for cell in notebook["cells"]
        for tag in cell.get("metadata", {}).get("tags", [])
        if tag.startswith(FILL_IN)
    ]


def with_solutions(src: Path, dst: Path) -> Path:
    """Write a copy of notebook `src` to `dst` with every fill-in cell replaced by its solution
    and the exercises' solutions appended as code cells (tagged "solution")."""
    import nbformat

    nb = nbformat.read(src, as_version=4)
    fill_ins, exercises = read_solutions(solutions_file(src))
    for cell in nb.cells:
        for tag in cell.metadata.get("tags", []):
            if tag.startswith(FILL_IN):
                name = tag[len(FILL_IN) :]
                if name not in fill_ins:
                    raise ValueError(f"{solutions_file(src)} has no section 'Fill-in: {name}'")
                cell.source = fill_ins[name]
    for code in exercises:
        nb.cells.append(nbformat.v4.new_code_cell(code, metadata={"tags": ["solution"]}))
    nbformat.write(nb, dst)
    return dst


TIMES_FILE = Path("build", "notebook-times.json")  # what the last notebook runs measured
# The kernel draws figures inline whatever the caller's backend (tests run with Agg), so an
# executed copy holds its figures (`make site` shows them).
MPL, INLINE = "MPLBACKEND", "module://matplotlib_inline.backend_inline"
EXECUTED_DIR = Path(
    "build", "executed"
)  # the notebooks as shipped, executed: `make site` reads them


def record_time(run: NotebookRun, path: str | os.PathLike = TIMES_FILE) -> Path:
    """Add a notebook run's seconds to `path` (JSON {notebook: seconds}); return the path.

    The notebook tests record every run; scripts/notebook_times.py turns the file into the
    instructor guide's table and the notebooks' "Time:" lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[run.name] = round(run.seconds, 1)
    path.write_text(json.dumps(dict(sorted(data.items())), indent=1))
    return path


@dataclass
class NotebookRun:
    """The result of executing one notebook."""

    name: str
    seconds: float
    output: Path
    figures: dict
    error: str | None = None

    def summary(self) -> str:
        figs = "; ".join(f"{k} {v}" for k, v in self.figures.items()) or "no key figure"
        status = "ok  " if self.error is None else "FAIL"
        return f"{status} {self.name:<34} {self.seconds:6.1f} s  {figs}"


def run_notebook(
    path: str | os.PathLike,
    out_dir: str | os.PathLike = "build",
    profile: str = "tiny",
    timeout: int = 1200,
    raise_on_error: bool = True,
    solutions: bool = False,
) -> NotebookRun:
    """Execute one notebook with papermill in `profile` and return its time and key figures.

    With `solutions`, every fill-in cell holds its solution (`with_solutions`) and each check
    must find it right (MMLIB_EXERCISES=strict), and the exercises' solutions run after the
    notebook; without, it runs as shipped, the fill-ins blank (mmlib's versions stand in).
    """
    import papermill as pm

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no notebook at {str(path)!r}")
    out = Path(out_dir) / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        source = with_solutions(path, Path(tmp) / path.name) if solutions else path
        old = {k: os.environ.get(k) for k in (REPORT_ENV, "MMLIB_PROFILE", STRICT_ENV, MPL)}
        os.environ[REPORT_ENV] = str(report)
        os.environ["MMLIB_PROFILE"] = profile
        os.environ[STRICT_ENV] = "strict" if solutions else ""
        os.environ[MPL] = INLINE  # figures into the executed copy, as Jupyter shows them
        start = time.perf_counter()
        error = None
        try:
            pm.execute_notebook(
                str(source),
                str(out),
                parameters={"PROFILE": profile},
                cwd=str(path.parent),
                kernel_name="python3",
                progress_bar=False,
                execution_timeout=timeout,
            )
        except Exception as err:  # papermill raises PapermillExecutionError with the cell
            error = f"{type(err).__name__}: {err}"
            if raise_on_error:
                raise
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        seconds = time.perf_counter() - start
        figures = json.loads(report.read_text()) if report.is_file() else {}
    return NotebookRun(path.stem, seconds, out, figures, error)


def run_course(
    out_dir: str | os.PathLike = EXECUTED_DIR, profile: str = "tiny"
) -> list[NotebookRun]:
    """Execute every course notebook in order into `out_dir`, printing one line per notebook."""
    runs = []
    for nb in course_notebooks():
        run = run_notebook(nb, out_dir, profile, raise_on_error=False)
        print(run.summary(), flush=True)
        if run.error:
            print(
                f"     {run.error.splitlines()[-1] if run.error else ''}\n"
                f"     see {run.output} for the failing cell"
            )
        runs.append(run)
    total = sum(r.seconds for r in runs)
    failed = [r.name for r in runs if r.error]
    print(
        f"{len(runs) - len(failed)}/{len(runs)} notebooks ran in {total:.0f} s; "
        f"executed copies in {Path(out_dir).resolve()}"
    )
    return runs
