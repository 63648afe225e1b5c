"""The site check (scripts/check_site.py): a notebook page must show every figure of the executed
notebook and no error; `make site` runs it on the real site after the build."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("check_site", ROOT / "scripts" / "check_site.py")
check_site = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_site)

PNG = {"output_type": "display_data", "data": {"image/png": "iVBORw0KGgo="}, "metadata": {}}
ERROR = {"output_type": "error", "ename": "ValueError", "evalue": "x", "traceback": []}


def _site(tmp_path, outputs, page):
    executed, site = tmp_path / "executed", tmp_path / "site"
    (site / "notebooks").mkdir(parents=True)
    executed.mkdir()
    nb = {"cells": [{"cell_type": "code", "source": "", "outputs": outputs}]}
    (executed / "01_x.ipynb").write_text(json.dumps(nb))
    (site / "_images").mkdir()
    (site / "_images" / "a.png").write_bytes(b"png")
    (site / "notebooks" / "01_x.html").write_text(page)
    return executed, site


def test_a_page_with_all_its_figures_and_no_error_passes(tmp_path):
    page = '<div class="cell_output"><img src="../_images/a.png"></div>'
    assert check_site.check_site(*_site(tmp_path, [PNG], page)) == []


@pytest.mark.parametrize(
    "outputs,page,says",
    [
        ([PNG, PNG], '<img src="../_images/a.png">', "shows 1 of its 2 figures"),
        ([PNG], '<img src="../_images/missing.png">', "shows 0 of its 1 figures"),
        ([PNG, ERROR], '<img src="../_images/a.png">', "1 error output(s)"),
        ([PNG], '<img src="../_images/a.png"><div class="output traceback">', "traceback block"),
        ([], "<p>no pictures</p>", "no figure at all"),
    ],
)
def test_a_missing_figure_or_an_error_is_a_problem(tmp_path, outputs, page, says):
    problems = check_site.check_site(*_site(tmp_path, outputs, page))
    assert any(says in p for p in problems), problems


def test_a_notebook_without_a_page_and_an_empty_folder_are_problems(tmp_path):
    executed, site = _site(tmp_path, [PNG], "")
    (site / "notebooks" / "01_x.html").unlink()
    assert "no page" in check_site.check_site(executed, site)[0]
    assert "no executed notebooks" in check_site.check_site(tmp_path / "none", site)[0]
