"""A pytest plugin that keeps every log line the test session writes, to scan for secrets.

In-process lines are rendered with the service's own `JsonFormatter` (what a
deployment writes to stderr) by a handler on the root logger, which is put
back if something (`service.logs.configure_logging`) replaces the root
handlers. Processes a test spawns write their stderr into `process_log_dir`,
and those files are part of the scan too. The root logger is set to INFO, the
service's default `LOG_LEVEL`, so the lines a deployment would write are the
lines kept.

`tests/contract/test_log_secrets.py` is moved to the end of the run so that it
sees everything the other tests logged.

Loaded by `tests/contract/conftest.py` (or, better, `pytest_plugins` in
`tests/conftest.py`, which also covers runs that do not collect tests/contract).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

SCAN_MODULE = "test_log_secrets.py"


_PLAIN = logging.Formatter()


def _unredacted(record: logging.LogRecord) -> str:
    try:
        parts = [record.name, record.getMessage(), repr(vars(record))]
    except Exception:
        parts = [record.name, repr(record.msg), repr(record.args)]
    if record.exc_info:
        parts.append(_PLAIN.formatException(record.exc_info))
    return " ".join(parts)


class _Capture(logging.Handler):
    """Keeps each record formatted the way the service writes it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        from service.logs import JsonFormatter

        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []
        # The same records before the formatter's redaction: what code handed the logger.
        self.raw: list[str] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # never let capture break a test; keep the raw message
            line = f"{record.name}: {record.msg!r} {record.args!r}"
        with self._guard:
            self.lines.append(line)
            self.raw.append(_unredacted(record))


class LogCapture:
    """Session state: the handler, the directory for child processes' output."""

    def __init__(self, process_log_dir: Path) -> None:
        self.handler = _Capture()
        self.process_log_dir = process_log_dir
        # Secrets issued during the run (webhook endpoint secrets) that tests want scanned for.
        self.issued_secrets: set[str] = set()
        self._previous_level: int | None = None

    def attach(self) -> None:
        root = logging.getLogger()
        if self.handler not in root.handlers:
            root.addHandler(self.handler)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            if self._previous_level is None:
                self._previous_level = root.level
            root.setLevel(logging.INFO)

    def detach(self) -> None:
        root = logging.getLogger()
        if self.handler in root.handlers:
            root.removeHandler(self.handler)
        if self._previous_level is not None:
            root.setLevel(self._previous_level)

    def in_process_lines(self) -> list[str]:
        return list(self.handler.lines)

    def raw_records(self) -> list[str]:
        return list(self.handler.raw)

    def process_lines(self) -> dict[str, list[str]]:
        """Each spawned process's output file -> its lines."""
        found: dict[str, list[str]] = {}
        for path in sorted(self.process_log_dir.glob("*.log")):
            found[path.name] = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return found


_KEY = pytest.StashKey[LogCapture]()


def capture_of(config: pytest.Config) -> LogCapture:
    return config.stash[_KEY]


def pytest_configure(config: pytest.Config) -> None:
    if _KEY in config.stash:
        return
    capture = LogCapture(Path(tempfile.mkdtemp(prefix="pytest-process-logs-")))
    config.stash[_KEY] = capture
    capture.attach()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _KEY in config.stash:
        capture = config.stash[_KEY]
        capture.detach()
        shutil.rmtree(capture.process_log_dir, ignore_errors=True)


def _reattach(item: pytest.Item) -> None:
    # A test may call configure_logging(), which replaces the root handlers.
    capture = item.config.stash.get(_KEY, None)
    if capture is not None:
        capture.attach()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _reattach(item)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    _reattach(item)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    _reattach(item)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the secret scan after everything else."""
    scans = [item for item in items if item.path.name == SCAN_MODULE]
    if scans:
        items[:] = [item for item in items if item.path.name != SCAN_MODULE] + scans


@pytest.fixture(scope="session")
def log_capture(request: pytest.FixtureRequest) -> LogCapture:
    return capture_of(request.config)


@pytest.fixture(scope="session")
def process_log_dir(log_capture: LogCapture) -> Path:
    """Where tests send the stderr of processes they spawn, so the scan reads it."""
    return log_capture.process_log_dir
