"""Numbers live in data, not docstrings: mmlib's docstrings and comments state a decision and
point to its measurement (docs/measurements.json, mmlib/data/spread/), so that no commit to the
code is needed when a measurement changes."""

import ast
import io
import json
import re
import tokenize
from pathlib import Path

import mmlib

PACKAGE = Path(mmlib.__file__).parent
ROOT = PACKAGE.parent
# A measured figure: a percentage, decibels, a speed-up (1.5x), a rate.
MEASURED = re.compile(r"\d(?:\.\d+)?\s?(?:%|dB\b|x faster|x slower|pictures/s|it/s)|\d\.\d+x\b")
# What may carry a percentage: a setting taken from a paper, a goal's format.
ALLOWED = re.compile(r"paper|et al|\">= \d|'>= \d|goal", re.I)


def prose(source: str) -> list[tuple[int, str]]:
    """Return (line, text) of every comment and docstring line of a module's source."""
    found = [
        (tok.start[0], tok.string)
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                first = node.body[0].lineno
                found += [(first + k, line) for k, line in enumerate(doc.splitlines())]
    return found


def measured_numbers(source: str) -> list[str]:
    return [
        f"{line}: {text.strip()}"
        for line, text in prose(source)
        if MEASURED.search(text) and not ALLOWED.search(text)
    ]


def test_the_scan_finds_a_measured_figure_and_lets_a_pointer_or_a_papers_setting_pass():
    source = (
        '"""Fast: 1.7x faster in bfloat16."""\n'
        "x = 1  # at 700 steps (25.6 dB) the model fell to 88.9%\n"
        "y = 0.1  # the paper drops the text 10% of the time\n"
        "z = 2  # docs/measurements.json has what it measured\n"
    )
    assert sorted(m.split(":")[0] for m in measured_numbers(source)) == ["1", "2"]


def test_no_docstring_or_comment_of_mmlib_holds_a_measured_number():
    found = [
        f"{path.relative_to(ROOT)}:{m}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for m in measured_numbers(path.read_text())
    ]
    assert not found, "measured numbers in prose; move them to data and point there:\n" + "\n".join(
        found
    )


def test_the_decisions_the_docstrings_point_to_are_in_the_measurements():
    decisions = json.loads((ROOT / "docs" / "measurements.json").read_text())["decisions"]
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "scripts").glob("*.py")]
    text = "\n".join(p.read_text() for p in files)
    for name, entry in decisions.items():
        if name.startswith("_"):
            continue
        assert name in text, f"no docstring points to the decision {name!r}"
        if entry["where"].endswith(".py"):  # a script of the repository's, as a whole
            assert name in (ROOT / entry["where"]).read_text(), entry["where"]
            continue
        module, _, attr = entry["where"].removeprefix("mmlib.").partition(".")
        assert attr.split(".")[0] in (PACKAGE / f"{module}.py").read_text(), entry["where"]
