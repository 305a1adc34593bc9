"""Running `wrk` (Debian: apt-get install wrk) and reading its summary."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclass(frozen=True)
class WrkResult:
    requests_per_second: float
    p50: float  # seconds
    p99: float
    requests: int
    errors: int  # non-2xx/3xx answers plus socket errors

    def line(self) -> str:
        return (
            f"{self.requests_per_second:,.0f} req/s, p50 {self.p50 * 1000:.2f} ms, "
            f"p99 {self.p99 * 1000:.2f} ms ({self.requests} requests, {self.errors} errors)"
        )


def require_wrk() -> str:
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install -y wrk)")
    return binary


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        return math.nan
    return float(match.group(1)) * UNITS[match.group(2)]


def parse(output: str) -> WrkResult:
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.MULTILINE))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    if not rps or "50" not in percentiles:
        raise RuntimeError(f"could not read wrk output:\n{output}")
    return WrkResult(
        requests_per_second=float(rps.group(1)),
        p50=_seconds(percentiles["50"]),
        p99=_seconds(percentiles.get("99", "nan")),
        requests=int(total.group(1)) if total else 0,
        errors=errors,
    )


def post_script(body: str, headers: dict[str, str]) -> Path:
    """A wrk Lua script that sends every request as a POST with this JSON body."""

    def lua_string(value: str) -> str:
        return "[==[" + value + "]==]"

    lines = ['wrk.method = "POST"', f"wrk.body = {lua_string(body)}"]
    # The spaces matter: "[[" would open a Lua long string.
    lines += [f"wrk.headers[ {lua_string(k)} ] = {lua_string(v)}" for k, v in headers.items()]
    handle = tempfile.NamedTemporaryFile(  # kept: wrk reads it later
        "w", suffix=".lua", prefix="bench-wrk-", delete=False
    )
    with handle:
        handle.write("\n".join(lines) + "\n")
    return Path(handle.name)


def run(
    url: str,
    *,
    connections: int,
    seconds: float,
    threads: int = 1,
    headers: dict[str, str] | None = None,
    script: Path | None = None,
) -> WrkResult:
    argv = [require_wrk(), "--latency", "-t", str(threads), "-c", str(connections)]
    argv += ["-d", f"{max(1, round(seconds))}s", "--timeout", "10s"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(url)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse(done.stdout)
