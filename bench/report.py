"""Small helpers for the result blocks every benchmark prints."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = int(line.split()[1]) / 1024 / 1024
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores, {mem_gb:.1f} GiB RAM, {model}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


@dataclass(frozen=True)
class Goal:
    """One row of issue #20's table: a measure, its figure (as a ratio against the
    baseline run beside it), the goal and whether this run met it."""

    measure: str
    measured: str
    goal: str
    met: bool | None


# Filled by the benchmarks as they run; `python -m bench` prints them together.
GOALS: list[Goal] = []


def record_goal(measure: str, measured: str, goal: str, met: bool | None) -> None:
    GOALS.append(Goal(measure, measured, goal, met))


def goals_table(goals: Sequence[Goal]) -> None:
    """The goal rows of this run as one table, with the load the machine was under."""
    if not goals:
        return
    width = max(len(g.measure) for g in goals)
    print()
    print("=== goals (issue #20)")
    print(f"    machine: {machine()}; load average {load_average()}")
    for g in goals:
        state = "n/a" if g.met is None else ("met" if g.met else "MISSED")
        print(f"    {g.measure.ljust(width)}  {g.measured}  [goal {g.goal}: {state}]")
    print(flush=True)


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def block(title: str, rows: Sequence[tuple[str, str]]) -> None:
    """Print a titled block of `name: value` lines, aligned."""
    width = max((len(name) for name, _ in rows), default=0)
    print()
    print(f"=== {title}")
    print(f"    machine: {machine()}; load average {load_average()}")
    for name, value in rows:
        print(f"    {name.ljust(width)}  {value}")
    print(flush=True)


def verdict(value: float, goal: float, *, at_least: bool) -> str:
    if math.isnan(value):
        return "n/a"
    met = value >= goal if at_least else value <= goal
    sign = ">=" if at_least else "<="
    return f"{'met' if met else 'MISSED'} (goal {sign} {goal:g})"


def fmt_ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.2f} ms"
