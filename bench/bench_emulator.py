"""How many InvokeModel answers per second the emulator serves on one core.

The emulator must never be the bottleneck of the runner's benchmarks, so this measures it alone:
the emulator runs in its own process (``python -m runner.emulator --port 0``, pinned to one CPU when
the machine has two or more, whatever ``BENCH_PIN`` says), and a load generator in another process
drives it:

* ``raw``: aiohttp client, keep-alive connections, ``concurrency`` requests in flight, for
  ``duration_s`` seconds, minimal bodies carrying a SigV4-shaped Authorization header;
* ``aioboto3``: a few hundred real ``invoke_model`` calls (signing, serialisation and parsing
  included), which is the client cost the runner pays; it is bounded by the client, not the emulator.

``python -m bench.bench_emulator`` prints the figures; ``run() -> dict`` returns them for
``bench/__main__.py`` to collect into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench._common import ROOT, EmulatorProcess, child_env, pin

MODEL_ID = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/bedrock/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=0000"
)


def _body(i: int) -> bytes:
    return json.dumps(
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": f"Classify row {i}: the quick brown fox."}],
        },
        separators=(",", ":"),
    ).encode()


async def _drive_raw(url: str, duration_s: float, concurrency: int, warmup_s: float) -> dict[str, Any]:
    import aiohttp

    path = f"{url}/model/{MODEL_ID.replace(':', '%3A')}/invoke"
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Authorization": AUTHORIZATION,
    }
    bodies = [_body(i) for i in range(1024)]
    ok = errors = 0
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(n: int, measure_from: float, until: float) -> None:
            nonlocal ok, errors
            i = n
            while True:
                started = loop.time()
                if started >= until:
                    return
                async with session.post(path, data=bodies[i % 1024], headers=headers) as response:
                    await response.read()
                    status = response.status
                i += concurrency
                if started >= measure_from:
                    if status == 200:
                        ok += 1
                    else:
                        errors += 1
                    latencies.append(loop.time() - started)

        begin = loop.time()
        measure_from = begin + warmup_s
        until = measure_from + duration_s
        await asyncio.gather(*(worker(n, measure_from, until) for n in range(concurrency)))
        elapsed = loop.time() - measure_from
    latencies.sort()
    return {
        "requests": ok + errors,
        "errors": errors,
        "seconds": round(elapsed, 3),
        "rps": round(ok / elapsed, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 2) if latencies else None,
        "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 2) if latencies else None,
        "concurrency": concurrency,
    }


async def _drive_aioboto3(url: str, calls: int, concurrency: int) -> dict[str, Any]:
    import aioboto3
    import botocore.config

    session = aioboto3.Session()
    config = botocore.config.Config(retries={"total_max_attempts": 1}, max_pool_connections=concurrency)
    async with session.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    ) as client:
        semaphore = asyncio.Semaphore(concurrency)
        latencies: list[float] = []

        async def call(i: int) -> None:
            async with semaphore:
                started = time.perf_counter()
                response = await client.invoke_model(
                    modelId=MODEL_ID, body=_body(i), contentType="application/json", accept="application/json"
                )
                async with response["body"] as stream:
                    await stream.read()
                latencies.append(time.perf_counter() - started)

        await call(-1)  # loads the service model, opens the pool
        started = time.perf_counter()
        await asyncio.gather(*(call(i) for i in range(calls)))
        elapsed = time.perf_counter() - started
    return {
        "requests": calls,
        "seconds": round(elapsed, 3),
        "rps": round(calls / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 2),
        "concurrency": concurrency,
    }


def _drive_in_subprocess(mode: str, url: str, **options: Any) -> dict[str, Any]:
    """Run the load generator as a separate process pinned to CPU 1, return its JSON."""
    args = [sys.executable, "-m", "bench.bench_emulator", "--drive", mode, "--url", url]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    result = subprocess.run(
        args,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=child_env(),
        timeout=300,
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def run(
    *, duration_s: float = 5.0, concurrency: int = 64, boto_calls: int = 500, boto_concurrency: int = 32
) -> dict[str, Any]:
    """Measure the emulator: raw keep-alive throughput, then real aioboto3 calls. Returns the figures."""
    with EmulatorProcess() as emulator:
        pin(emulator.pid, 0, always=True)
        raw = _drive_in_subprocess("raw", emulator.url, duration_s=duration_s, concurrency=concurrency)
        boto = _drive_in_subprocess("aioboto3", emulator.url, calls=boto_calls, concurrency=boto_concurrency)
    return {
        "name": "emulator",
        "emulator_invoke_rps": raw["rps"],
        "emulator_invoke_p50_ms": raw["p50_ms"],
        "emulator_invoke_p99_ms": raw["p99_ms"],
        "emulator_invoke_errors": raw["errors"],
        "aioboto3_invoke_rps": boto["rps"],
        "aioboto3_invoke_p50_ms": boto["p50_ms"],
        "raw": raw,
        "aioboto3": boto,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drive", choices=["raw", "aioboto3"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    if args.drive:
        pin(0, 1, always=True)
        if args.drive == "raw":
            figures = asyncio.run(_drive_raw(args.url, args.duration_s, args.concurrency, warmup_s=0.5))
        else:
            figures = asyncio.run(_drive_aioboto3(args.url, args.calls, args.concurrency))
        print(json.dumps(figures))
        return
    figures = run(duration_s=args.duration_s, concurrency=args.concurrency, boto_calls=args.calls)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    raw, boto = figures["raw"], figures["aioboto3"]
    print(
        f"emulator, raw aiohttp keep-alive x{raw['concurrency']}: {raw['rps']:,.0f} req/s "
        f"(p50 {raw['p50_ms']} ms, p99 {raw['p99_ms']} ms, "
        f"{raw['requests']:,} requests, {raw['errors']} errors)"
    )
    print(
        f"emulator, aioboto3 invoke_model x{boto['concurrency']}: {boto['rps']:,.0f} req/s "
        f"(p50 {boto['p50_ms']} ms, {boto['requests']} calls; bounded by the client)"
    )


if __name__ == "__main__":
    _main()
