"""Secrets never reach a response after creation, nor any log line the test session wrote.

`tests/log_capture.py` keeps every log line of the session (in-process lines
rendered by the service's own JSON formatter, plus the output of processes
tests spawned into `process_log_dir`) and moves this module to the end of the
run, so the last test here scans everything the suite logged.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable

import pytest

from tests.conftest import API_KEYS, WEBHOOK_SECRET, auth
from tests.log_capture import LogCapture

PROVIDER_KEY = "sk-test-not-a-real-key"
# Secrets other test modules configure; listed here so the scan knows them.
OTHER_CONFIGURED = (
    "whsec_c2ltdWxhdG9yLXRvLXNlcnZpY2Utc2VjcmV0",  # tests/integration/conftest.py
    "whsec_ZnV6ei1vcGVuYWktd2ViaG9vay1zZWNyZXQ=",  # tests/contract/test_schemathesis.py
)
# Anything shaped like a secret, whoever issued it: every webhook secret the
# service hands out starts with whsec_, provider keys with sk-.
SECRET_SHAPES = re.compile(r"(?<![A-Za-z0-9])(?:whsec_[A-Za-z0-9+/=_-]{8,}|sk-[A-Za-z0-9_-]{8,})")


def configured_secrets() -> set[str]:
    return {*API_KEYS.values(), WEBHOOK_SECRET, PROVIDER_KEY, *OTHER_CONFIGURED}


def find_leaks(lines: Iterable[str], secrets: set[str], where: str) -> list[str]:
    leaks = []
    for number, line in enumerate(lines, start=1):
        found = sorted({s for s in secrets if s in line} | set(SECRET_SHAPES.findall(line)))
        if found:
            shown = ", ".join(f"{s[:8]}…" for s in found)
            leaks.append(f"{where}:{number}: {shown} in {line[:300]}")
    return leaks


def test_the_scan_finds_what_it_looks_for() -> None:
    secrets = configured_secrets()
    for secret in secrets:
        assert find_leaks([f'{{"msg": "x", "auth": "{secret}"}}'], secrets, "t"), secret
    issued = "whsec_" + "A" * 43 + "="
    assert find_leaks([f"delivery failed for {issued}"], set(), "t")
    assert not find_leaks(['{"msg": "request", "key": "[redacted]"}'], secrets, "t")
    assert not find_leaks(["arq task-0123456789abcdef done"], secrets, "t")


async def test_endpoint_secret_is_shown_once_then_never_again(
    client, worker, log_capture: LogCapture
) -> None:  # type: ignore[no-untyped-def]
    created = await client.post(
        "/webhooks",
        headers=auth(),
        json={"url": "http://127.0.0.1:9/hook", "event_types": ["job.succeeded"]},
    )
    assert created.status_code == 201, created.text
    endpoint = created.json()
    first = endpoint["secret"]
    assert first.startswith("whsec_")
    log_capture.issued_secrets.add(first)

    rotated = await client.post(f"/webhooks/{endpoint['id']}/rotate-secret", headers=auth())
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()["secret"]
    assert second != first
    log_capture.issued_secrets.add(second)

    # A ping to a closed port: the worker signs it with both secrets, fails, logs it.
    ping = await client.post(f"/webhooks/{endpoint['id']}/test", headers=auth())
    assert ping.status_code == 202, ping.text
    delivery_url = f"/webhooks/deliveries/{ping.json()['id']}"
    for _ in range(100):  # until the worker has signed and attempted it once
        delivery = (await client.get(delivery_url, headers=auth())).json()
        if delivery["attempt_count"] >= 1:
            break
        await asyncio.sleep(0.1)
    assert delivery["attempt_count"] >= 1, delivery
    wrong = await client.get("/webhooks", headers={"Authorization": "Bearer not-" + first})
    assert wrong.status_code == 401

    reads = [
        await client.get(f"/webhooks/{endpoint['id']}", headers=auth()),
        await client.get("/webhooks", headers=auth()),
        await client.get(f"/webhooks/{endpoint['id']}/deliveries", headers=auth()),
        await client.get(delivery_url, headers=auth()),
        await client.patch(
            f"/webhooks/{endpoint['id']}", headers=auth(), json={"description": "changed"}
        ),
    ]
    for response in reads:
        assert response.status_code == 200, response.text
        body = response.text
        assert first not in body
        assert second not in body
        assert "whsec_" not in body
        assert '"secret"' not in body


def test_no_secret_in_any_log_line_of_the_session(log_capture: LogCapture) -> None:
    """Runs last (see tests/log_capture.py): everything the suite logged."""
    secrets = configured_secrets() | log_capture.issued_secrets
    lines = log_capture.in_process_lines()
    # Not vacuous: the request above wrote access lines at least.
    assert any('"logger": "service.access"' in line for line in lines)
    leaks = find_leaks(lines, secrets, "in-process")
    for name, process_lines in log_capture.process_lines().items():
        leaks += find_leaks(process_lines, secrets, name)
    assert not leaks, "secrets in log lines:\n" + "\n".join(leaks[:20])


@pytest.mark.parametrize("kind", ["caller keys", "issued webhook secrets"])
def test_code_never_hands_a_secret_to_the_logger(log_capture: LogCapture, kind: str) -> None:
    """Stricter than the line scan: the records before the formatter's redaction.

    The redactor in service.logs is the last line of defence; code should not
    rely on it for secrets it knows it is handling.
    """
    secrets = set(API_KEYS.values()) if kind == "caller keys" else log_capture.issued_secrets
    assert secrets
    leaks = find_leaks(log_capture.raw_records(), secrets, "record")
    assert not leaks, f"{kind} passed to the logger:\n" + "\n".join(leaks[:20])
