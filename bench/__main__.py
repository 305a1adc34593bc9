"""`make bench`: run every benchmark module in bench/ in turn.

    python -m bench                  every bench/bench_*.py with its defaults (the issue's sizes)
    python -m bench --quick          the same with small sizes (a few minutes in all)
    python -m bench ingest api       only these (names without the bench_ prefix)
    python -m bench --goals          issue #20's table: ingest, API, chat and lifecycle at
                                     sizes that fit a few minutes each, every row a ratio
                                     against its baseline run beside it

Each module's `main(argv) -> int` runs with its own arguments; a failing
benchmark does not stop the others, and the exit code is non-zero if any
failed. Run one module with its options: `python -m bench.bench_ingest --mb 10`.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path

from bench import report

# Small sizes for `--quick`, per module; modules not listed run with their defaults.
QUICK_ARGS: dict[str, list[str]] = {
    "bench_ingest": ["--mb", "10", "--rounds", "1"],
    "bench_api": ["--seconds", "4", "--rounds", "1", "--jobs", "50"],
    "bench_chat": ["--seconds", "3", "--rounds", "1"],
    "bench_lifecycle": ["--jobs", "100", "--job-seconds", "4"],
    "bench_chaos": ["--jobs", "20", "--chaos-seconds", "20", "--timeout", "420"],
    "bench_trainer": ["--rounds", "1"],
    "bench_evals": ["--examples", "200", "--rounds", "1"],
}
# `--goals`: the benchmarks behind issue #20's table, at sizes that keep each one to a
# few minutes on two cores (the lifecycle at the table's 1,000 jobs).
GOALS_ARGS: dict[str, list[str]] = {
    "bench_ingest": ["--mb", "20", "--rounds", "2"],
    "bench_api": ["--seconds", "5", "--rounds", "2", "--jobs", "100"],
    "bench_chat": ["--connections", "1,16", "--seconds", "5", "--rounds", "2"],
    "bench_lifecycle": ["--jobs", "1000", "--job-seconds", "10", "--timeout", "400"],
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    quick = "--quick" in args
    goals = "--goals" in args
    wanted = {
        f"bench_{name.removeprefix('bench_')}"
        for name in args
        if name not in ("--quick", "--goals")
    }
    if goals and not wanted:
        wanted = set(GOALS_ARGS)
    here = Path(__file__).parent
    names = sorted(
        info.name for info in pkgutil.iter_modules([str(here)]) if info.name.startswith("bench_")
    )
    if wanted:
        unknown = wanted - set(names)
        if unknown:
            print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; have {', '.join(names)}")
            return 2
        names = [name for name in names if name in wanted]
    if not names:
        print("no benchmarks yet")
        return 0
    failed: list[str] = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        module_args = QUICK_ARGS.get(name, []) if quick else []
        if goals:
            module_args = GOALS_ARGS.get(name, module_args)
        print(f"== {name} {' '.join(module_args)}".rstrip(), flush=True)
        started = time.monotonic()
        try:
            code = int(module.main(module_args) or 0)
        except Exception:
            traceback.print_exc()
            code = 1
        print(f"== {name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code:
            failed.append(name)
    report.goals_table(report.GOALS)
    if failed:
        print(f"failed or missed a correctness check: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
