"""dvc.yaml's code deps cover every cmmvt module each stage script imports, transitively (no stale results)."""

import ast
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _module_file(name: str) -> Path | None:
    """The file of ``cmmvt.x.y`` in this repo (a package's ``__init__.py``), or None if it is not ours."""
    if not name.startswith("cmmvt"):
        return None
    base = REPO.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(path: Path) -> set[Path]:
    """cmmvt files imported by ``path`` anywhere (top level or inside functions), packages' ``__init__`` included."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    out: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing cmmvt.a.b runs cmmvt/__init__ and cmmvt/a/__init__
                f = _module_file(".".join(parts[:i]))
                if f is not None:
                    out.add(f)
    return out


def _closure(script: Path) -> set[Path]:
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for f in _imports(todo.pop()) - seen:
            seen.add(f)
            todo.append(f)
    return seen


def _covered(f: Path, deps: list[str]) -> bool:
    rel = f.relative_to(REPO).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


def test_every_imported_module_is_a_stage_dep():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    missing = []
    for name, stage in stages.items():
        body = stage.get("do", stage)
        script = REPO / body["cmd"].split()[1]
        deps = [d for d in body.get("deps", []) if isinstance(d, str)]
        for f in sorted(_closure(script)):
            rel = f.relative_to(REPO).as_posix()
            if rel in ("cmmvt/__init__.py", "cmmvt/config.py"):  # config: every key is a tracked param
                continue
            if not _covered(f, deps):
                missing.append(f"{name}: {rel}")
    assert not missing, "dvc.yaml lacks deps on modules its stages import:\n" + "\n".join(missing)


def test_the_checker_sees_function_level_imports():
    closure = {f.relative_to(REPO).as_posix() for f in _closure(REPO / "cmmvt" / "features" / "extract.py")}
    assert "cmmvt/data/manifest.py" in closure  # imported inside discover()
    assert "cmmvt/features/fingerprint.py" in closure and "cmmvt/media/encode.py" in closure  # via packages


def test_no_import_cycles_and_core_never_imports_experiments_or_cli():
    """Import graph of the package (function-level imports included): acyclic; only cli reaches experiments/."""
    files = sorted((REPO / "cmmvt").rglob("*.py"))
    graph = {f: _imports(f) - {f} for f in files}
    state: dict[Path, int] = {}

    def visit(f: Path, path: list[Path]) -> None:
        state[f] = 1
        for g in graph.get(f, ()):
            if g.name == "__init__.py" and g.parent in f.parents:
                continue  # a module's own package __init__ runs first; not a dependency of the package on it
            assert state.get(g) != 1, "import cycle: " + " → ".join(p.relative_to(REPO).as_posix() for p in [*path, f, g])
            if g not in state:
                visit(g, [*path, f])
        state[f] = 2

    for f in files:
        if f not in state:
            visit(f, [])
    for f in files:
        rel = f.relative_to(REPO).as_posix()
        if rel.startswith("cmmvt/experiments/") or rel == "cmmvt/cli.py":
            continue
        bad = [g.relative_to(REPO).as_posix() for g in graph[f]
               if g.relative_to(REPO).as_posix().startswith("cmmvt/experiments/") or g.name == "cli.py"]
        assert not bad, f"{rel} imports {bad}"


def test_extract_procs_is_not_a_param_of_the_extract_stage():
    """The number of processes does not change the rows: changing it must not invalidate the caches."""
    body = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["extract"]
    params = set(body["do"]["params"]) | {v for item in body["foreach"].values() for v in item.values()}
    assert "extract.procs" not in params and "extract" not in params
