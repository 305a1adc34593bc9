"""`python -m worker`: run the worker until SIGINT/SIGTERM (see worker.processes).

The entry point lives in an importable module because `WORKER_PROCESSES` spawns
children, and a spawned child finds its target by module name (`__main__` is
not one it can import).
"""

from __future__ import annotations

from worker.processes import main

if __name__ == "__main__":
    main()
