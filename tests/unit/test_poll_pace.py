"""How often a job is polled: quickly after a change, slower while nothing moves."""

from __future__ import annotations

import pytest

from service.domain.jobs import Step, next_poll, poll_delay, toward_finish
from tests.unit.test_job_progress import job

T0 = 1_780_000_000.0


def test_waits_grow_by_1_6_times_from_a_change_up_to_the_longest() -> None:
    waits, now = [], T0
    for _ in range(6):
        wait = poll_delay(now - T0, minimum=1.0, maximum=5.0)
        waits.append(wait)
        now += wait
    assert waits == pytest.approx([1.0, 1.6, 2.56, 4.096, 5.0, 5.0])


def test_a_change_brings_polls_back_to_the_quickest() -> None:
    polled = job()
    assert next_poll(polled, Step(), now=T0, minimum=1, maximum=5) == 1.0
    assert next_poll(polled, Step(), now=T0 + 60, minimum=1, maximum=5) == 5.0
    changed = Step()
    changed.changed = True
    assert next_poll(polled, changed, now=T0 + 61, minimum=1, maximum=5) == 1.0
    assert polled.changed_at == T0 + 61
    assert next_poll(polled, Step(), now=T0 + 62, minimum=1, maximum=5) == pytest.approx(1.6)


def test_a_running_job_is_polled_when_its_provider_expects_it_to_finish() -> None:
    def wait(estimate: float | None) -> float:
        return toward_finish(5.0, now=T0, estimated_finish=estimate, minimum=1.0, maximum=5.0)

    assert wait(None) == 5.0  # no estimate: the back-off stands
    assert wait(T0 + 2.5) == 2.5  # due before the next poll: polled then
    assert wait(T0 + 0.2) == 1.0  # never sooner than the shortest interval
    assert wait(T0 + 9.0) == 5.0  # due after the next poll: nothing changes
    assert wait(T0) == 1.0  # at the estimate and still running: polled quickly
    assert wait(T0 - 1.0) == pytest.approx(1.6)  # then backing off as from a change
    assert wait(T0 - 30.0) == 5.0  # long past: the estimate changes nothing
