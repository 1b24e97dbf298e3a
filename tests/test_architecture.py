"""The packages' imports run one way, down a list of layers (plumbing, data, models, training, export,
evaluation, tuning, audit, the CLI), with no cycles between modules, and benchmarks and examples on
the public API."""

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "transferkit"

# The layers, lowest first: a package may import those before it and never one after it (data knows
# no model; training knows nothing of plots, reports and exports; nothing below the CLI imports it).
LAYERS = ("_internal", "data", "models", "training", "export", "evaluation", "tuning", "audit", "cli")
FORBIDDEN = {package: set(LAYERS[i + 1:]) for i, package in enumerate(LAYERS)}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The ``transferkit`` modules a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("transferkit"):
            found.add(node.module)
            for alias in node.names:  # from transferkit.training import distribute: a module
                if (PACKAGE.parent / node.module.replace(".", "/") / f"{alias.name}.py").exists():
                    found.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("transferkit")}
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) - {module_name(p)} for p in PACKAGE.rglob("*.py")}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def reachable(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), list(edges.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo += edges.get(node, ())
    return seen


def test_every_module_lives_in_a_package():
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py"]
    assert {p.parent.name for p in PACKAGE.rglob("*.py")} - {"transferkit"} == set(LAYERS)


def test_no_module_imports_itself_through_others():
    edges = {name: {d for d in deps if d != "transferkit"} for name, deps in graph().items()}
    cycles = {name for name in edges if "." in name and name in reachable(name, edges)
              and not name.endswith("__init__")}
    assert not cycles, {name: sorted(edges[name]) for name in cycles}


def test_no_import_runs_the_wrong_way():
    edges = {name: {d for d in deps if d != "transferkit"} for name, deps in graph().items()}
    checked = set()
    for module in edges:
        banned = FORBIDDEN.get(package_of(module), set())
        reached = {package_of(m) for m in reachable(module, edges)}
        assert not reached & banned, f"{module} reaches {sorted(reached & banned)}"
        checked.add(package_of(module))
    assert set(FORBIDDEN) <= checked
    assert [m for m, deps in edges.items() if package_of(m) != "cli" and any(package_of(d) == "cli" for d in deps)] == []


def test_a_backwards_import_would_be_caught(tmp_path):
    """The check above fails on a real wrong-way import (a control for it)."""
    edges = {"transferkit.data.folder": {"transferkit.models.head"}, "transferkit.models.head": set()}
    reached = {package_of(m) for m in reachable("transferkit.data.folder", edges)}
    assert reached & FORBIDDEN["data"] == {"models"}


def test_benchmarks_and_examples_use_public_modules_only():
    for path in [*REPO.glob("benchmarks/*.py"), *REPO.glob("examples/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("transferkit"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
                measuring = path.parent.name == "benchmarks" and node.module == "transferkit._internal.memory"
                assert "._internal" not in node.module or measuring, f"{path.name} imports {node.module}"
