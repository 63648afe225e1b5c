"""Is there room on this disk for `make test`? Says so in one line before an hour of work.

`make test` writes, at its peak: the course's venv (.venv, most of it PyTorch), the zoo and the
executed notebooks (build/), the colab check's Python 3.13 venv (Colab's CUDA build of torch,
removed after the check) and the tests' temporary files. A disk that fills halfway makes tests
fail in ways that name no disk, or hang, so this looks first. The peak is measured
(docs/measurements.json, decisions, make_test_disk_peak).

    python scripts/disk_check.py

Exit status 1, with what is free, what is needed and what to do, when there is not enough room.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GB = 1024**3


def folder_size(path: Path) -> int:
    """Return the bytes of the files under path (0 when it does not exist)."""
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def needed_bytes() -> int:
    """Return the bytes make test still needs: the measured peak less what is already written."""
    peak = json.loads((ROOT / "docs" / "measurements.json").read_text())["decisions"]
    peak = peak["make_test_disk_peak"]["gb"]
    present = folder_size(ROOT / ".venv") + folder_size(ROOT / "build")
    return max(0, int(peak * GB) - present)


def main() -> int:
    need = needed_bytes()
    short = []
    for where in sorted({ROOT, Path(tempfile.gettempdir())}):
        free = shutil.disk_usage(where).free
        if free < need:
            short.append(f"{where}: {free / GB:.1f} GB free")
    if short:
        print(
            f"disk check: make test needs about {need / GB:.1f} GB more disk space, and "
            f"{'; '.join(short)}. Free some space (an old clone's .venv and build/ are most of "
            "it) and run it again.",
            file=sys.stderr,
        )
        return 1
    print(f"disk check: {need / GB:.1f} GB more needed, there is room")
    return 0


if __name__ == "__main__":
    sys.exit(main())
