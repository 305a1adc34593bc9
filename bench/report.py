"""Small helpers for the result blocks every benchmark prints."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence
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


def block(title: str, rows: Sequence[tuple[str, str]]) -> None:
    """Print a titled block of `name: value` lines, aligned."""
    width = max((len(name) for name, _ in rows), default=0)
    print()
    print(f"=== {title}")
    print(f"    machine: {machine()}")
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
