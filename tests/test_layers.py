"""The layers map (mmlib/layers.txt) holds: every import of every module points down, or
sideways to a module listed before it. Function bodies count; there is no exception list.
Modules of a subpackage are named with a dot (tools.cli); nothing outside tools/ imports tools."""

import ast
import itertools
from pathlib import Path

import mmlib

PACKAGE = Path(mmlib.__file__).parent


def read_layers(path: Path = PACKAGE / "layers.txt") -> dict[str, tuple[int, int]]:
    """Return {module: (layer rank from the bottom, position in its layer)}."""
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines() if ":" in line]
    lines = [line for line in lines if line]
    rank = {}
    for level, line in enumerate(reversed(lines)):
        _, names = line.split(":", 1)
        for pos, name in enumerate(names.split()):
            assert name not in rank, f"{name} is in the layers map twice"
            rank[name] = (level, pos)
    return rank


def module_name(path: Path) -> str:
    """Return a module's name in the layers map: its path under mmlib/, dotted (tools.cli)."""
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def modules() -> dict[str, Path]:
    """Return {name: path} of every module of mmlib (subpackages included, __init__ files not)."""
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if p.stem != "__init__"}


def resolve(dotted: str) -> str:
    """Return the module of mmlib that `dotted` (mmlib.tools.cli.main, mmlib.zoo) names."""
    parts = dotted.split(".")[1:]
    for end in range(len(parts), 0, -1):
        if (PACKAGE.joinpath(*parts[:end]).with_suffix(".py")).is_file():
            return ".".join(parts[:end])
    return ".".join(parts)  # a subpackage itself (its __init__)


def mmlib_imports(path: Path) -> list[tuple[int, str]]:
    """Return (line, module) for every mmlib module that the file imports, anywhere in it."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [
                (node.lineno, resolve(a.name)) for a in node.names if a.name.startswith("mmlib.")
            ]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "mmlib" or node.module.startswith("mmlib."):
                base = resolve(node.module) if node.module != "mmlib" else ""
                for a in node.names:
                    name = f"{base}.{a.name}".lstrip(".")
                    if PACKAGE.joinpath(*name.split(".")).with_suffix(".py").is_file():
                        found.append((node.lineno, name))
                    elif base:
                        found.append((node.lineno, base))
        elif isinstance(node, ast.Call) and _imports_by_name(node) and node.args:
            target = node.args[0]  # importlib.import_module("mmlib.x"), __import__("mmlib.x")
            if isinstance(target, ast.Constant) and str(target.value).startswith("mmlib."):
                found.append((node.lineno, resolve(str(target.value))))
        elif isinstance(node, (ast.List, ast.Tuple)):  # [sys.executable, "-m", "mmlib.x", ...]
            items = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            for flag, module in itertools.pairwise(items):
                if flag == "-m" and isinstance(module, str) and module.startswith("mmlib."):
                    found.append((node.lineno, resolve(module) + "?"))
    return found


def _imports_by_name(call: ast.Call) -> bool:
    func = call.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
    return name in ("__import__", "import_module")


def allowed(importer: str, imported: str, rank: dict) -> bool:
    (lo, pos), (their_lo, their_pos) = rank[importer], rank[imported]
    return their_lo < lo or (their_lo == lo and their_pos < pos) or importer == imported


def test_every_module_is_in_the_map_and_the_map_names_only_modules():
    rank = read_layers()
    names = set(modules())
    assert names == set(rank), (
        f"not in mmlib/layers.txt: {sorted(names - set(rank))}; "
        f"in it but no such module: {sorted(set(rank) - names)}"
    )


def test_every_import_points_down_or_to_an_earlier_module_of_its_layer():
    rank = read_layers()
    wrong = []
    for importer, path in sorted(modules().items()):
        for line, imported in mmlib_imports(path):
            name = imported.rstrip("?")
            if imported.endswith("?") and name == importer:
                continue  # a module naming itself (bench's `python -m mmlib.tools.bench --child`)
            if name not in rank or not allowed(importer, name, rank):
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports {name}")
    assert not wrong, "imports against mmlib/layers.txt:\n" + "\n".join(wrong)


def test_the_checker_sees_imports_inside_functions_and_strings(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text(
        "def f():\n    from mmlib import zoo\n    import mmlib.tools.cli\n"
        "    from mmlib.tools import commands\n    from mmlib.store.packs import PackError\n"
        "    run([sys.executable, '-m', 'mmlib.tools.bench'])\n"
        "    return __import__('mmlib.widgets')\n"
    )
    assert sorted(m for _, m in mmlib_imports(bad)) == [
        "store.packs",
        "tools.bench?",
        "tools.cli",
        "tools.commands",
        "widgets",
        "zoo",
    ]
    rank = read_layers()
    assert not allowed("clip", "zoo", rank) and not allowed("env", "clip", rank)
    assert not allowed("contrastive", "dalle", rank)  # sideways, listed after it
    assert allowed("dalle", "judge", rank) and allowed("zoo", "clip", rank)


def test_the_readme_shows_the_map():
    readme = (PACKAGE.parent / "README.md").read_text()
    body = [
        line
        for line in (PACKAGE / "layers.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    for line in body:
        assert line in readme, f"README.md's development section lacks the layers line {line!r}"


def test_nothing_outside_tools_imports_tools():
    wrong = [
        f"{name}:{line} imports {imported}"
        for name, path in sorted(modules().items())
        if not name.startswith("tools.") and name != "__main__"  # python -m mmlib is the CLI
        for line, imported in mmlib_imports(path)
        if imported.startswith("tools")
    ]
    assert not wrong, "only tools/ may import tools/:\n" + "\n".join(wrong)
    rank = read_layers()
    faces = max(level for level, _ in rank.values())
    assert all(rank[n][0] == faces for n in rank if n.startswith("tools.")), "tools are faces"
