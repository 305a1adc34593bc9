"""`make bench`: run every benchmark module in bench/ in turn."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    names = sorted(
        info.name for info in pkgutil.iter_modules([str(here)]) if info.name.startswith("bench_")
    )
    if not names:
        print("no benchmarks yet")
        return 0
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"== {name}")
        code = module.main([])
        if code:
            return int(code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
