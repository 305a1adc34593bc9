"""The walls of the house (DESIGN section 3), read from the imports.

Domain code is pure; the worker is an arq binding that never loads the HTTP
edge; the simulator and the trainer stand apart from the service; only a
provider's own folder talks to the `openai` SDK.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO


def imports(folder: str) -> Iterator[tuple[str, str]]:
    for path in sorted((REPO / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                yield str(path.relative_to(REPO)), name


def crossing(folder: str, banned: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    return [
        f"{path} imports {name}"
        for path, name in imports(folder)
        if not path.startswith(allowed)
        and any(name == b or name.startswith(b + ".") for b in banned)
    ]


@pytest.mark.parametrize(
    ("folder", "banned", "allowed"),
    [
        (
            "service/domain",
            ("redis", "httpx", "httpx2", "aiohttp", "litestar", "openai", "arq"),
            (),
        ),
        ("worker", ("service.api", "service.app", "litestar"), ()),
        ("simulator", ("service", "worker"), ()),
        ("trainer", ("service", "worker", "simulator"), ()),
        ("service", ("openai",), ("service/providers/",)),
        # The two outbound clients: the providers' wire and the webhooks' POST.
        ("service", ("aiohttp",), ("service/providers/", "service/webhooks/client.py")),
        ("worker", ("openai",), ()),
    ],
)
def test_no_import_crosses_a_wall(
    folder: str, banned: tuple[str, ...], allowed: tuple[str, ...]
) -> None:
    if not (REPO / folder).exists():
        pytest.skip(f"{folder} does not exist yet")
    assert crossing(folder, banned, allowed) == []


def test_the_worker_process_loads_no_litestar_and_no_torch() -> None:
    """Not only its own imports: nothing it imports pulls the HTTP edge (or torch) in."""
    probe = (
        "import sys, worker.main, worker.tasks; "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('litestar', 'torch')); "
        "print(','.join(loaded))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_the_api_loads_no_torch() -> None:
    probe = "import sys, service.app; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_a_provider_kind_is_one_folder() -> None:
    """Every `kind` the registry can build is a package under service/providers/ with `build`."""
    kinds = [
        path.parent.name
        for path in (REPO / "service" / "providers").glob("*/__init__.py")
        if "def build(" in path.read_text(encoding="utf-8")
    ]
    assert "openai" in kinds
    assert Path(REPO / "service" / "providers" / "base.py").exists()
