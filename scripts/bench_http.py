"""HTTP load from a separate process: N concurrent keep-alive clients for T seconds.

    python scripts/bench_http.py URL [URL ...] --seconds 5 --concurrency 32
Prints one JSON line per URL: {"url", "requests", "rps", "p50_ms", "p99_ms", "errors"}.
Uses wrk when it is installed (and --no-wrk is not given), else an aiohttp client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import time

import aiohttp


async def aiohttp_load(url: str, seconds: float, concurrency: int) -> dict:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                async with session.get(url) as resp:
                    await resp.read()
                    if resp.status >= 500:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 3) if latencies else 0.0

    return {"url": url, "tool": "aiohttp", "requests": len(latencies), "rps": len(latencies) / elapsed,
            "p50_ms": pct(0.5), "p99_ms": pct(0.99), "errors": errors}


def wrk_load(url: str, seconds: float, concurrency: int) -> dict:
    out = subprocess.run(["wrk", "-t2", f"-c{concurrency}", f"-d{max(1, int(seconds))}s", "--latency", url],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def latency(label: str) -> float:
        match = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        if not match:
            return 0.0
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {"url": url, "tool": "wrk", "requests": requests, "rps": rps, "p50_ms": latency("50"),
            "p99_ms": latency("99"), "errors": 0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--no-wrk", action="store_true")
    args = parser.parse_args()
    use_wrk = shutil.which("wrk") is not None and not args.no_wrk
    for url in args.urls:
        result = (wrk_load(url, args.seconds, args.concurrency) if use_wrk
                  else asyncio.run(aiohttp_load(url, args.seconds, args.concurrency)))
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
