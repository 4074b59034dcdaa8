"""``run_job``: builds a job's parts from its spec and runs it, start or resume; callable from code.

The order matters and is the whole safety story: everything that can be wrong with the spec, the
input, the routes or the job directory is found *before* the first paid call (exit 2), and the
results file is rebuilt from committed parts whatever way the run ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import structlog

from runner import catalog
from runner import logging as runner_logging
from runner.batch.lane import run_batch_lane
from runner.bedrock import AioBotoTransport, Transport
from runner.errors import PreflightError, RouteError
from runner.exit_codes import EXIT_INTERRUPTED, EXIT_OK, EXIT_ROWS_FAILED
from runner.limits import Admission
from runner.pool import STOP_INTERRUPTED, CostCap, Counters, Pool
from runner.pricing import PriceTable
from runner.progress import figures, report_progress
from runner.request import dumps_body
from runner.routing import Router, plan_routes
from runner.sink import PartSink, part_schema
from runner.source import Source
from runner.spec import JobSpec
from runner.state import JobDir, Progress
from runner.storage import upload_results
from runner.types import Route

log = structlog.get_logger("runner.job")


@dataclass(frozen=True, slots=True)
class JobReport:
    """How a run ended, with the figures the CLI prints and the exit code it returns."""

    exit_code: int
    output: Path
    progress: Progress
    stopped: str | None
    elapsed_s: float
    counters: Counters
    routes: dict[str, str] = field(default_factory=dict)
    recovered_rows: int = 0


def resolve_spec(
    spec: JobSpec,
    *,
    input: str | None = None,
    output: str | None = None,
    endpoint_url: str | None = None,
    max_in_flight: int | None = None,
    mode: str | None = None,
) -> JobSpec:
    """Apply CLI overrides to a loaded spec (re-validated, so a bad flag is a ``SpecError`` too)."""
    from runner.spec import spec_from_dict

    raw = spec.to_dict()
    for dotted, value in (
        ("job.input", input),
        ("job.output", output),
        ("model.endpoint_url", endpoint_url),
        ("limits.max_in_flight", max_in_flight),
        ("job.mode", mode),
    ):
        if value is not None:
            section, _, key = dotted.partition(".")
            raw[section][key] = value
    return spec_from_dict(raw, source=spec.source)


GC_THRESHOLD = (50_000, 20, 20)
"""Garbage-collector thresholds while :func:`run_job` runs. With the default (700, 10, 10) a job ran
a young-generation collection every ~25 rows and spent ~11 % of its CPU in the collector (20,000
rows at zero latency: 1.5 of 14 CPU s); rows allocate short-lived containers that refcounting frees
anyway. Restored when the job ends."""


@contextlib.contextmanager
def gc_tuned() -> Iterator[None]:
    """Run with :data:`GC_THRESHOLD`, then put the caller's thresholds back."""
    old = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*old)


def run_job(spec: JobSpec, **kwargs: Any) -> JobReport:
    """Run (or resume) ``spec`` to the end; see :func:`run_job_async` for the keywords."""
    with gc_tuned():
        return anyio.run(lambda: run_job_async(spec, **kwargs), backend="asyncio")


async def run_job_async(
    spec: JobSpec,
    *,
    limit: int | None = None,
    retry_failed: bool = False,
    force: bool = False,
    preflight: bool | None = None,
    progress: bool | None = None,
    transport: Transport | None = None,
    handle_signals: bool = True,
    grace_s: float = 30.0,
    log_level: str = "info",
) -> JobReport:
    """Run or resume a job. Raises ``BatchError`` subclasses for what must stop it before any call.

    ``transport`` replaces Bedrock (tests of the pool use an in-process fake); ``preflight`` overrides
    the spec's setting; ``progress`` forces the terminal bar on or off (default: on a TTY).
    """
    started = time.monotonic()
    region = spec.region
    routes = plan_routes(
        spec.model.id, region=region, endpoints=spec.model.endpoints, residency=spec.model.residency
    )
    model, _ = catalog.find_model(spec.model.id)
    prices = PriceTable.load(spec.output.prices or None)
    source = Source(spec, limit=limit)
    fingerprint = source.fingerprint()
    job = JobDir(spec.job.output)
    with job.lock():
        state = job.start_run(
            spec=spec.to_dict(), fingerprint=fingerprint.to_dict(), force=force, stamp=source.stamp()
        )
        runner_logging.configure(
            level=log_level, events_path=job.events_file, log_prompts=spec.output.log_prompts
        )
        structlog.contextvars.bind_contextvars(job=spec.name)
        if catalog.is_deprecated(model):
            log.warning("model.deprecated", model=model.name, since=str(model.deprecated))
        log.info(
            "job.started",
            region=region,
            routes=[r.name for r in routes],
            rows=fingerprint.rows,
            output=str(job.root),
            price_table=prices.name,
            endpoint_url=spec.model.endpoint_url or None,
        )
        schema = part_schema(source.keep_fields())
        recovered = job.recover(schema)
        if recovered:
            log.info("job.recovered", rows=recovered)
        if "input_changed_at" in state and force:
            job.remap(source.ids())
        done = job.done_keys(retry_failed=retry_failed)
        done_rows = job.done_rows(retry_failed=retry_failed) if state["trusted"] else None
        counters = Counters()
        burndown = spec.limits.output_burndown or model.output_burndown
        admission = Admission(
            routes,
            max_in_flight=spec.limits.max_in_flight,
            tpm=spec.limits.tpm,
            adaptive=spec.limits.adaptive,
            output_burndown=burndown,
        )
        router = Router(routes)
        sink = PartSink(
            job.parts,
            job.journal,
            schema=schema,
            price_table=prices.name,
            next_number=job.next_part_number(),
            part_rows=spec.output.part_rows,
            part_seconds=spec.output.part_seconds,
        )
        before = job.progress(scope=limit)
        cost_cap = None
        if spec.limits.max_cost_usd:
            spent = _spent_so_far(job)
            cost_cap = CostCap(spec.limits.max_cost_usd, prices.cost, spent_usd=spent)
        stopped: str | None = None
        try:
            async with _transport(transport, spec, routes) as bedrock:
                do_preflight = spec.model.preflight if preflight is None else preflight
                if do_preflight and before.pending:
                    await _preflight(bedrock, router, routes)
                pool = Pool(
                    transport=bedrock,
                    router=router,
                    admission=admission,
                    sink=sink,
                    retry=spec.retry,
                    pricer=prices.cost,
                    max_in_flight=spec.limits.max_in_flight,
                    cost_cap=cost_cap,
                    grace_s=grace_s,
                    counters=counters,
                )
                tty = sys.stderr.isatty() if progress is None else progress
                async with anyio.create_task_group() as tg:
                    if handle_signals:
                        tg.start_soon(_watch_signals, pool)
                    tg.start_soon(lambda: report_progress(counters, admission, before.pending, tty=tty))
                    records = source.records(done, done_rows=done_rows)
                    if spec.job.mode == "batch":  # Bedrock batch inference first, the pool finishes
                        records = await run_batch_lane(
                            spec, job=job, source=source, sink=sink, prices=prices, routes=router.active,
                            counters=counters, pool=pool, done=done, retry_failed=retry_failed,
                            cost_cap=cost_cap,
                        )  # fmt: skip
                    outcome = await pool.run(records)
                    tg.cancel_scope.cancel()
                stopped = outcome.stopped
        finally:
            sink.close()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(job.recover, schema)
                await anyio.to_thread.run_sync(job.consolidate)
        if spec.output.s3_uri:
            await anyio.to_thread.run_sync(upload_results, job.results, spec.output.s3_uri)
        after = dataclasses.replace(job.progress(scope=limit), running=False)  # our own lock
        elapsed = time.monotonic() - started
        if stopped == STOP_INTERRUPTED:
            code = EXIT_INTERRUPTED
        elif after.failed or after.pending:
            code = EXIT_ROWS_FAILED
        else:
            code = EXIT_OK
        route_states = {r.name: router.state(r) for r in routes}
        log.info(
            "job.finished",
            exit_code=code,
            stopped=stopped,
            rows=after.rows,
            ok=after.ok,
            failed=after.failed,
            pending=after.pending,
            elapsed_s=round(elapsed, 2),
            routes=route_states,
            **{
                k: v
                for k, v in figures(counters, admission, before.pending).items()
                if k not in ("routes", "ok", "failed")
            },
        )
        runner_logging.close()
        structlog.contextvars.unbind_contextvars("job")
    return JobReport(
        exit_code=code,
        output=job.root,
        progress=after,
        stopped=stopped,
        elapsed_s=elapsed,
        counters=counters,
        routes=route_states,
        recovered_rows=recovered,
    )


def _spent_so_far(job: JobDir) -> float:
    """What earlier runs of this job already spent (for ``max_cost_usd`` across reruns)."""
    import pyarrow.compute as pc

    latest = job.latest(["cost_usd"])
    if latest.num_rows == 0:
        return 0.0
    return float(pc.sum(latest.column("cost_usd")).as_py() or 0.0)


class _transport:
    """Async context: the given transport, or aioboto3 clients for every region of the routes."""

    def __init__(self, given: Transport | None, spec: JobSpec, routes: list[Route]) -> None:
        self._given = given
        self._cm = (
            None
            if given is not None
            else AioBotoTransport.open(
                [r.region for r in routes],
                endpoint_url=spec.model.endpoint_url or None,
                max_in_flight=spec.limits.max_in_flight,
                timeout_s=spec.retry.timeout_s,
            )
        )

    async def __aenter__(self) -> Transport:
        if self._cm is None:
            assert self._given is not None
            return self._given
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        if self._cm is not None:
            await self._cm.__aexit__(*exc)  # type: ignore[arg-type]


PREFLIGHT_BODY = dumps_body(
    {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "ping"}],
    }
)


async def _preflight(bedrock: Transport, router: Router, routes: list[Route]) -> None:
    """One minimal request per route: drop the routes that deny access or do not exist.

    Throttles and 5xx do not drop a route (they say nothing about access). No route left: exit 2.
    """
    for route in routes:
        try:
            with anyio.fail_after(60):
                await bedrock.invoke(route, PREFLIGHT_BODY)
        except RouteError as exc:
            router.remove(route, str(exc))
            log.warning(
                "route.preflight_failed", route=route.name, error_type=exc.error_type, message=str(exc)
            )
        except Exception as exc:
            log.info("route.preflight_inconclusive", route=route.name, error=type(exc).__name__)
        else:
            log.info("route.preflight_ok", route=route.name)
    if not router.active:
        reasons = "; ".join(f"{r.name}: {why}" for r, why in router.removed().items())
        raise PreflightError(f"no route passed preflight ({reasons})")


async def _watch_signals(pool: Pool) -> None:
    """First Ctrl-C/SIGTERM: drain gracefully. Second: exit at once (the journal keeps state consistent)."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for sig in signals:
            if pool.stopped is None:
                print(
                    f"\n{signal.Signals(sig).name}: finishing requests in flight (up to {pool.grace_s:g} s); "
                    "press Ctrl-C again to stop at once",
                    file=sys.stderr,
                )
                pool.stop(STOP_INTERRUPTED)
            else:
                print("stopping now; rerun the same command to resume", file=sys.stderr)
                runner_logging.close()
                os._exit(EXIT_INTERRUPTED)
