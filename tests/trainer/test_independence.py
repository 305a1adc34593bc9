"""The trainer is its own program: it imports nothing from the service, the worker or
the simulator, and its modules load without torch until a model is needed."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

FORBIDDEN = ("service", "worker", "simulator")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_the_trainer_imports_nothing_from_the_service_worker_or_simulator() -> None:
    modules = sorted((REPO / "trainer").rglob("*.py"))
    assert modules
    for path in modules:
        bad = _imports(path) & set(FORBIDDEN)
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_the_server_modules_import_torch_only_inside_functions() -> None:
    """Top-level imports stay light, so `python -m trainer` starts in a moment."""
    heavy = {"torch", "transformers", "peft", "trl", "datasets", "accelerate", "ray"}
    for path in sorted((REPO / "trainer").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = set()
        for node in tree.body:
            if isinstance(node, ast.Import):
                top.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                top.add(node.module.split(".")[0])
        assert not top & heavy, f"{path.relative_to(REPO)} imports {sorted(top & heavy)}"
