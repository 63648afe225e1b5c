"""Check the built course site: every notebook has a page that shows all of its figures and no
error output (`make site` runs it after the build; stdlib only).

    python scripts/check_site.py build/executed build/site

A notebook's figures are the image outputs of its executed copy; its page must show at least
as many pictures (inline, or files that exist beside the page) and no traceback block. Exit 1
with one line per problem, or print one line per page and the site's page count and size.
"""

from __future__ import annotations

import json
import sys
from html.parser import HTMLParser
from pathlib import Path


class _Page(HTMLParser):
    """Collects a page's <img> sources and counts its traceback blocks."""

    def __init__(self):
        super().__init__()
        self.pictures: list[str] = []
        self.tracebacks = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "img":
            self.pictures.append(attrs.get("src") or "")
        if "traceback" in classes or "output_error" in classes:
            self.tracebacks += 1


def notebook_outputs(path: Path) -> tuple[int, int]:
    """Return (figures, error outputs) of an executed notebook."""
    figures = errors = 0
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        for out in cell.get("outputs", []):
            errors += out.get("output_type") == "error"
            figures += any(key.startswith("image/") for key in out.get("data", {}))
    return figures, errors


def check_site(executed: Path, site: Path) -> list[str]:
    """Return the problems found (empty: the site is complete), printing a line per page."""
    notebooks = sorted(executed.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        return [f"no executed notebooks in {executed}: run the notebooks first (`make course`)"]
    problems = []
    for notebook in notebooks:
        figures, errors = notebook_outputs(notebook)
        page_path = site / "notebooks" / f"{notebook.stem}.html"
        if not page_path.is_file():
            problems.append(f"{notebook.name}: no page {page_path}")
            continue
        page = _Page()
        page.feed(page_path.read_text(encoding="utf-8"))
        shown = [
            src
            for src in page.pictures
            if src.startswith("data:image/") or (page_path.parent / src).is_file()
        ]
        if errors:
            problems.append(f"{notebook.name}: {errors} error output(s) in the executed notebook")
        if page.tracebacks:
            problems.append(f"{page_path.name}: {page.tracebacks} traceback block(s)")
        if figures == 0:
            problems.append(f"{notebook.name}: no figure at all")
        if len(shown) < figures:
            problems.append(f"{page_path.name}: shows {len(shown)} of its {figures} figures")
        print(f"{page_path.name}: {len(shown)} pictures shown for {figures} figures, 0 errors")
    return problems


def main(argv: list[str]) -> int:
    executed, site = (Path(a) for a in (argv + ["build/executed", "build/site"][len(argv) :])[:2])
    problems = check_site(executed, site)
    if problems:
        print("site check failed:\n  " + "\n  ".join(problems))
        return 1
    pages = list(site.rglob("*.html"))
    size = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())
    print(f"site OK: {len(pages)} pages, {size / 1e6:.1f} MB in {site}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
