"""The package's imports run one way: no cycles, training below reports, the CLI on top, and
benchmarks on the public API."""

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "transferkit"

# What each kind of module may not reach, directly or through others.
FORBIDDEN = {
    "trainer": {"evaluate", "plots", "run", "cli", "tuning", "trial_runner", "export"},
    "features": {"trainer", "evaluate", "plots", "run", "cli", "tuning"},
    "tuning": {"cli"},
    "trial_runner": {"tuning", "cli", "trainer"},
}


def imports_of(path: Path) -> set[str]:
    """The ``transferkit`` modules a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("transferkit"):
            parts = node.module.split(".")
            if len(parts) > 1:
                found.add(parts[1])
            else:  # from transferkit import x: a module, or a name the package re-exports
                found |= {alias.name for alias in node.names if (PACKAGE / f"{alias.name}.py").exists()}
                found.add("__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("transferkit."):
                    found.add(alias.name.split(".")[1])
    return found


def graph() -> dict[str, set[str]]:
    modules = {p.stem: imports_of(p) for p in PACKAGE.glob("*.py")}
    exported = modules["__init__"] - {"__init__"}
    for name, deps in modules.items():  # "from transferkit import X" reaches what the package imports
        if "__init__" in deps and name != "__init__":
            deps.discard("__init__")
    return {name: deps - {name} for name, deps in modules.items()} | {"__init__": exported}


def reachable(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), list(edges.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo += edges.get(node, ())
    return seen


def test_no_module_imports_itself_through_others():
    edges = graph()
    cycles = {name for name in edges if name != "__init__" and name in reachable(name, edges)}
    assert not cycles, {name: sorted(edges[name]) for name in cycles}


def test_no_import_runs_the_wrong_way():
    edges = graph()
    for module, banned in FORBIDDEN.items():
        reached = reachable(module, edges)
        assert not reached & banned, f"{module} reaches {sorted(reached & banned)}"
    library = [name for name in edges if name not in ("cli", "__init__")]
    assert [name for name in library if "cli" in edges[name]] == []  # nothing below the CLI imports it


def test_benchmarks_and_examples_use_public_modules_only():
    for path in [*REPO.glob("benchmarks/*.py"), *REPO.glob("examples/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("transferkit"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
