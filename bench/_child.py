"""The runner side of a benchmark, in its own process: ``python -m bench._child TARGET`` < params.json.

Targets print one line ``BENCH-RESULT {json}`` on stdout:

* ``job``: ``run_job`` on a spec (the whole pipeline: Parquet in, pool, aioboto3, parts, results), timed
  from the call to its return, with the CPU time of this process over the same span.
* ``cli``: the ``bedrock-batch`` command line in this process, reporting its peak RSS at the end;
* ``bare``: the same InvokeModel bodies sent with bare ``client.invoke_model`` calls (body read, nothing
  else) through the very client ``AioBotoTransport.open`` builds for a job (``runner.bedrock.
  client_config``), ``max_in_flight`` workers, on an anyio event loop as the runner uses, with the
  garbage-collector thresholds ``run_job`` sets (``runner.job.gc_tuned``).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from bench._common import RESULT_PREFIX


def _vmhwm_mb() -> float:
    """Peak RSS of this process so far (``VmHWM``), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def job(params: dict[str, Any]) -> dict[str, Any]:
    from runner.job import run_job
    from runner.spec import spec_from_dict

    spec = spec_from_dict(params["spec"], source="bench")
    rss_before = _vmhwm_mb()
    cpu0, t0 = time.process_time(), time.monotonic()
    report = run_job(
        spec,
        progress=False,
        log_level=params.get("log_level", "warning"),
        grace_s=float(params.get("grace_s", 5.0)),
        limit=params.get("limit"),
    )
    elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    c = report.counters
    rows = c.ok + c.failed
    return {
        "exit_code": report.exit_code,
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "rows": rows,
        "ok": c.ok,
        "failed": c.failed,
        "attempts": c.attempts,
        "throttles": c.throttles,
        "input_tokens": c.input_tokens,
        "output_tokens": c.output_tokens,
        "rows_per_s": rows / elapsed if elapsed else 0.0,
        "cpu_ms_per_row": 1000 * cpu / rows if rows else None,
        "first_request_s": (c.first_request_at - t0) if c.first_request_at else None,
        "rss_before_mb": rss_before,
        "vmhwm_mb": _vmhwm_mb(),
        "progress": {
            "rows": report.progress.rows,
            "ok": report.progress.ok,
            "failed": report.progress.failed,
            "failed_retryable": report.progress.failed_retryable,
            "pending": report.progress.pending,
        },
    }


def bare(params: dict[str, Any]) -> dict[str, Any]:
    from runner.routing import plan_routes
    from runner.source import Source
    from runner.spec import spec_from_dict

    spec = spec_from_dict(params["spec"], source="bench")
    bodies = [r.body for batch in Source(spec).records() for r in batch if r.body is not None]
    route = plan_routes(spec.model.id, region=spec.region, endpoints=spec.model.endpoints)[0]
    workers = spec.limits.max_in_flight
    out: dict[str, Any] = {}

    async def main() -> None:
        from runner.bedrock import AioBotoTransport

        cpu0, t0 = time.process_time(), time.monotonic()
        async with AioBotoTransport.open(
            [route.region],
            endpoint_url=spec.model.endpoint_url,
            max_in_flight=workers,
            timeout_s=spec.retry.timeout_s,
        ) as transport:
            client = transport._clients[route.region]  # the job's own client, not a look-alike
            todo = iter(bodies)

            async def worker() -> None:
                if params.get("via_transport"):  # diagnosis: the runner's transport call, parsing included
                    for body in todo:
                        await transport.invoke(route, body)
                    return
                for body in todo:
                    response = await client.invoke_model(
                        modelId=route.model_id,
                        body=body,
                        contentType="application/json",
                        accept="application/json",
                    )
                    async with response["body"] as stream:
                        await stream.read()

            async with anyio.create_task_group() as tg:
                for _ in range(workers):
                    tg.start_soon(worker)
        elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
        out.update(
            elapsed_s=elapsed,
            cpu_s=cpu,
            rows=len(bodies),
            rows_per_s=len(bodies) / elapsed,
            cpu_ms_per_row=1000 * cpu / len(bodies),
        )

    # The job runs with the runner's GC thresholds (run_job's gc_tuned); so do the bare calls, or the
    # ratio would credit the pipeline with a collector setting that speeds botocore up as well.
    try:
        from runner.job import gc_tuned
    except ImportError:  # a runner from before the setting
        anyio.run(main, backend="asyncio")
    else:
        with gc_tuned():
            anyio.run(main, backend="asyncio")
    out["vmhwm_mb"] = _vmhwm_mb()
    return out


def cli(params: dict[str, Any]) -> dict[str, Any]:
    """``bedrock-batch ARGV`` in this process, then its peak RSS (``VmHWM``).

    The kernel's ``ru_maxrss`` of a child also counts the memory image it was forked from (the
    benchmark process), so a peak taken from ``wait4`` is the parent's when the parent is larger.
    """
    from runner.cli import main as cli_main

    code = cli_main(list(params["argv"]))
    return {"exit_code": code, "vmhwm_mb": _vmhwm_mb()}


TARGETS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"job": job, "bare": bare, "cli": cli}


def main() -> int:
    target = TARGETS[sys.argv[1]]
    params = json.loads(sys.stdin.read() or "{}")
    result = target(params)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
