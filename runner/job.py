"""``run_job``: builds a job's parts from its spec and runs it, start or resume; callable from code.

The order matters and is the whole safety story: everything that can be wrong with the spec, the
input, the routes or the job directory is found *before* the first paid call (exit 2), and the
results file is rebuilt from committed parts whatever way the run ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import pyarrow as pa
import structlog

from runner import catalog
from runner import logging as runner_logging
from runner.advice import quota_advice
from runner.batch.lane import run_batch_lane
from runner.bedrock import AioBotoControlPlane, AioBotoTransport, Transport, logging_destinations
from runner.errors import (
    BatchError,
    EndpointUnreachableError,
    JobEnvironmentError,
    ModelTimeoutError,
    PreflightError,
    RouteError,
    SinkError,
    SourceError,
    StateError,
    leaf_error,
)
from runner.exit_codes import EXIT_INTERRUPTED, EXIT_OK, EXIT_ROWS_FAILED
from runner.limits import Admission
from runner.pool import STOP_INTERRUPTED, CostCap, Counters, Pool
from runner.pricing import PriceTable
from runner.progress import figures, report_progress
from runner.request import dumps_body
from runner.routing import Router, job_routes
from runner.sink import PartSink, part_schema
from runner.source import InputFingerprint, Source
from runner.spec import JobSpec
from runner.state import JobDir, Progress
from runner.storage import upload_results
from runner.types import Record, Route

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


GC_THRESHOLD = (50_000, 20, 20)
"""Garbage-collector thresholds while :func:`run_job` runs. With the default (700, 10, 10) a job ran
young-generation collections every few rows and spent a tenth of its CPU in the collector (bench/notes.md,
"Measurements behind the code"); rows allocate short-lived containers that refcounting frees anyway.
Restored when the job ends."""


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
    emulated: bool = False,
) -> JobReport:
    """Run or resume a job. Raises ``BatchError`` subclasses for what must stop it before any call.

    ``transport`` replaces Bedrock (tests of the pool use an in-process fake); ``preflight`` overrides
    the spec's setting; ``progress`` forces the terminal bar on or off (default: on a TTY).
    ``emulated`` marks a dry run (``run --emulate``): its job directory is refused to real runs and
    its rows' ``lane`` says so (``emulated_on_demand``).

    Open the job (nothing is sent), run the lanes, finish (``results.parquet`` is rebuilt from the
    committed parts whatever way the lanes ended).
    """
    started = time.monotonic()
    routes = job_routes(spec)
    model, _ = catalog.find_model(spec.model.id)
    prices = PriceTable.load(spec.output.prices or None)
    source = Source(spec, limit=limit)
    fingerprint = source.fingerprint()
    job = JobDir(spec.job.output)
    with job.lock():
        run = _open(
            spec, job, _Inputs(routes, model, prices, source, fingerprint),
            limit=limit, force=force, retry_failed=retry_failed, log_level=log_level, emulated=emulated,
        )  # fmt: skip
        stopped: str | None = None
        failure: BaseException | None = None
        try:
            stopped = await _run_lanes(
                run, transport=transport, preflight=preflight, progress=progress,
                handle_signals=handle_signals, grace_s=grace_s, retry_failed=retry_failed,
            )  # fmt: skip
        except BaseException as exc:
            failure = exc
        try:
            await _close(run)
        except Exception as exc:
            if failure is None:
                failure = exc
            else:  # the first failure is the one to report; this one likely has the same cause
                log.warning("job.close_failed", error_type=type(exc).__name__, message=str(exc))
        if failure is None:
            try:
                return await _finish(run, stopped=stopped, started=started, limit=limit)
            except Exception as exc:
                failure = exc
        raise _failed(run, failure)


@dataclass(eq=False)
class _Run:
    """The parts of one run of a job, made by :func:`_open` before anything is sent."""

    spec: JobSpec
    job: JobDir
    routes: list[Route]
    source: Source
    prices: PriceTable
    schema: pa.Schema
    recovered: int
    done: set[int]
    done_rows: set[int] | None
    before: Progress
    counters: Counters
    admission: Admission
    router: Router
    sink: PartSink
    cost_cap: CostCap | None
    emulated: bool = False


class _Inputs(NamedTuple):
    """What a run is checked against before its job directory is touched (a bad one exits 2)."""

    routes: list[Route]
    model: catalog.Model
    prices: PriceTable
    source: Source
    fingerprint: InputFingerprint


def _open(
    spec: JobSpec,
    job: JobDir,
    inputs: _Inputs,
    *,
    limit: int | None,
    force: bool,
    retry_failed: bool,
    log_level: str,
    emulated: bool = False,
) -> _Run:
    """Start or resume the job directory (its lock held), recover what a crash left, build the parts."""
    routes, model, prices, source, fingerprint = inputs
    job.check_output()
    state = job.start_run(
        spec=spec.to_dict(),
        fingerprint=fingerprint.to_dict(),
        force=force,
        stamp=source.stamp(),
        emulated=emulated,
    )
    runner_logging.configure(
        level=log_level, events_path=job.events_file, log_prompts=spec.output.log_prompts
    )
    structlog.contextvars.bind_contextvars(job=spec.name)
    if catalog.is_deprecated(model):
        log.warning("model.deprecated", model=model.name, since=str(model.deprecated))
    home = spec.region_setting
    log.info(
        "job.started",
        region=home.value,
        region_source=home.source,
        routes=[r.name for r in routes],
        rows=fingerprint.rows,
        output=str(job.root),
        price_table=prices.name,
        endpoint_url=spec.model.endpoint_url or None,
        emulated=emulated,
    )
    for route in routes:
        if route.geography != "global" and route.region not in spec.regions:
            log.warning(
                "route.region_switched",
                route=route.name,
                home_region=home.value,
                region=route.region,
                message=f"{route.model_id} is called from {route.region}, not from the home region "
                f"{home.value} (outside the {route.geography!r} geography); set [model] region "
                f"(or --region) to a {route.geography} region to choose which",
            )
    schema = part_schema(source.keep_fields(), source.id_type())
    recovered = job.recover(schema)
    if recovered:
        log.info("job.recovered", rows=recovered)
    if state.get("remap_pending"):  # this run's --force, or one killed before its remap ended
        job.remap(source.ids())
    burndown = spec.limits.output_burndown or model.output_burndown
    admission = Admission(
        routes,
        max_in_flight=spec.limits.max_in_flight,
        tpm={route: spec.tpm_for(route.name, route.region) for route in routes},
        adaptive=spec.limits.adaptive,
        output_burndown=burndown,
    )
    sink = PartSink(
        job.parts,
        job.journal,
        schema=schema,
        price_table=prices.name,
        next_number=job.next_part_number(),
        part_rows=spec.output.part_rows,
        part_seconds=spec.output.part_seconds,
        emulated=emulated,
    )
    cost_cap = None
    if spec.limits.max_cost_usd:
        cost_cap = CostCap(spec.limits.max_cost_usd, prices.cost, spent_usd=_spent_so_far(job))
    return _Run(
        spec=spec,
        job=job,
        routes=routes,
        source=source,
        prices=prices,
        schema=schema,
        recovered=recovered,
        done=job.done_keys(retry_failed=retry_failed),
        done_rows=job.done_rows(retry_failed=retry_failed) if state["trusted"] else None,
        before=job.progress(scope=limit),
        counters=Counters(),
        admission=admission,
        router=Router(routes),
        sink=sink,
        cost_cap=cost_cap,
        emulated=emulated,
    )


async def _run_lanes(
    run: _Run,
    *,
    transport: Transport | None,
    preflight: bool | None,
    progress: bool | None,
    handle_signals: bool,
    grace_s: float,
    retry_failed: bool,
) -> str | None:
    """Preflight, then the batch lane (``mode = "batch"``) and the pool; returns why they stopped early."""
    spec, counters, admission, before = run.spec, run.counters, run.admission, run.before
    async with _transport(transport, spec, run.routes) as bedrock:
        do_preflight = spec.model.preflight if preflight is None else preflight
        if do_preflight and before.pending:
            await _preflight(
                bedrock,
                run.router,
                run.routes,
                timeout_s=min(PREFLIGHT_TIMEOUT_S, spec.retry.timeout_s),
                where=bedrock.endpoint_url if isinstance(bedrock, AioBotoTransport) else lambda r: r.name,
            )
            if transport is None and not run.emulated:  # Bedrock (or an emulator it stands for)
                await check_invocation_logging(spec, run.routes)
        pool = Pool(
            transport=bedrock,
            router=run.router,
            admission=admission,
            sink=run.sink,
            retry=spec.retry,
            pricer=run.prices.cost,
            max_in_flight=spec.limits.max_in_flight,
            cost_cap=run.cost_cap,
            grace_s=grace_s,
            counters=counters,
        )
        tty = sys.stderr.isatty() if progress is None else progress
        async with anyio.create_task_group() as tg:
            if handle_signals:
                tg.start_soon(_watch_signals, pool)
            tg.start_soon(lambda: report_progress(counters, admission, before.pending, tty=tty))
            records = run.source.records(
                run.done,
                done_rows=run.done_rows,
                answered=functools.partial(run.job.done_rows, retry_failed=retry_failed),
            )
            smallest = min((q for r in run.routes if (q := spec.tpm_for(r.name, r.region))), default=0)
            if smallest:
                records = _warn_small_quota(records, smallest)
            if spec.job.mode == "batch":  # Bedrock batch inference first, the pool finishes
                records = await run_batch_lane(
                    spec, job=run.job, source=run.source, sink=run.sink, prices=run.prices,
                    routes=run.router.active, counters=counters, pool=pool, done=run.done,
                    retry_failed=retry_failed, cost_cap=run.cost_cap,
                )  # fmt: skip
            outcome = await pool.run(records, rows=before.rows)  # no more workers than rows
            tg.cancel_scope.cancel()
    return outcome.stopped


def _warn_small_quota(records: Iterator[list[Record]], tpm: int) -> Iterator[list[Record]]:
    """Pass the records on; warn once, naming the figures, when a request would reserve more than the
    whole ``[limits] tpm``: admission then lets it go only when the quota has refilled, at most one such
    request a minute, which looked like a hang (``tpm = 1``)."""
    for batch in records:
        for record in batch:
            reserved = record.estimated_input_tokens + record.max_tokens
            if record.body is not None and reserved > tpm:
                log.warning(
                    "limits.tpm_below_reservation",
                    tpm=tpm,
                    reservation=reserved,
                    input_tokens=record.estimated_input_tokens,
                    max_tokens=record.max_tokens,
                    message=(
                        f"[limits] tpm = {tpm:,} is smaller than one request's reservation "
                        f"({reserved:,} tokens: about {record.estimated_input_tokens:,} input + max_tokens "
                        f"{record.max_tokens:,}); requests will wait for the quota to refill, one a "
                        "minute at best. Set tpm to your quota per route (0: learn it) or lower max_tokens"
                    ),
                )
                yield batch
                yield from records
                return
        yield batch


async def _close(run: _Run) -> None:
    """Whatever way the lanes ended: close the journal, commit what it holds, rebuild the results."""
    run.sink.close()
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(run.job.recover, run.schema)
        await anyio.to_thread.run_sync(_consolidate, run)


def _consolidate(run: _Run) -> None:
    """Rebuild ``results.parquet`` with the kept columns' current values; an input that can no longer
    be read (moved, S3 down) costs only that: the values the rows ran with are kept, and it says so."""
    kept = run.source.kept_values() if run.spec.columns.keep else None
    try:
        run.job.consolidate(run.schema, kept=kept)
    except SourceError as exc:
        log.warning("results.kept_columns_not_refreshed", reason=str(exc))
        run.job.consolidate(run.schema)


async def _finish(run: _Run, *, stopped: str | None, started: float, limit: int | None) -> JobReport:
    """Upload the results if asked, count the outcome, log ``job.finished``, pick the exit code."""
    spec, job, counters = run.spec, run.job, run.counters
    if spec.output.s3_uri:
        await anyio.to_thread.run_sync(upload_results, job.results, spec.output.s3_uri)
    after = dataclasses.replace(job.progress(scope=limit), running=False)  # our own lock
    elapsed_s = time.monotonic() - started
    if stopped == STOP_INTERRUPTED:
        code = EXIT_INTERRUPTED
    elif after.failed or after.pending:
        code = EXIT_ROWS_FAILED
    else:
        code = EXIT_OK
    route_states = {r.name: run.router.state(r) for r in run.routes}
    uses = run.admission.uses()
    for route, message in quota_advice(uses).items():
        log.warning(
            "quota.advice",
            route=route,
            requests=uses[route].requests,
            throttled=uses[route].throttled,
            message=message,
        )
    log.info(
        "job.finished",
        exit_code=code,
        stopped=stopped,
        rows=after.rows,
        ok=after.ok,
        failed=after.failed,
        pending=after.pending,
        elapsed_s=round(elapsed_s, 2),
        routes=route_states,
        **{
            k: v
            for k, v in figures(counters, run.admission, run.before.pending).items()
            if k not in ("routes", "ok", "failed", "elapsed_s", "eta_s")
        },
    )
    runner_logging.close()
    structlog.contextvars.unbind_contextvars("job")
    return JobReport(
        exit_code=code,
        output=job.root,
        progress=after,
        stopped=stopped,
        elapsed_s=elapsed_s,
        counters=counters,
        routes=route_states,
        recovered_rows=run.recovered,
    )


def _failed(run: _Run, exc: BaseException) -> BaseException:
    """What a run that stopped on ``exc`` raises: the error itself, never the task group around it.

    An environment failure (a ``SinkError``, ``SourceError``, ``StateError`` or ``OSError``: disk full,
    output path unusable, input gone) once paid calls began is a :class:`JobEnvironmentError` (exit 3,
    resumable): the contract keeps exit 2 for "stopped before the first paid call". Cancellation and
    Ctrl-C pass through as they are.
    """
    error = leaf_error(exc)
    if not isinstance(error, Exception):
        return error
    paid = run.counters.attempts > 0 or run.counters.ok > 0
    if paid and isinstance(error, SinkError | SourceError | StateError | OSError):
        reason = str(error) if isinstance(error, BatchError) else f"{type(error).__name__}: {error}"
        wrapped = JobEnvironmentError(
            f"{reason}; stopped after paid calls began. Nothing that came back is lost: fix the cause "
            "and rerun the same command to resume",
            cause=error,
        )
        wrapped.__cause__ = error
        error = wrapped
    # Our own messages name files and keys; another exception's text could hold row data: type only.
    message = str(error) if isinstance(error, BatchError) else None
    with contextlib.suppress(Exception):  # the events file may be on the disk that failed
        log.error("job.failed", error_type=type(error).__name__, message=message)
    runner_logging.close()
    structlog.contextvars.unbind_contextvars("job")
    return error


def _spent_so_far(job: JobDir) -> float:
    """What earlier runs of this job already spent (for ``max_cost_usd`` across reruns)."""
    import pyarrow.compute as pc

    latest = job.latest(["cost_usd"])
    if latest.num_rows == 0:
        return 0.0
    return float(pc.sum(latest.column("cost_usd")).as_py() or 0.0)


@contextlib.asynccontextmanager
async def _transport(given: Transport | None, spec: JobSpec, routes: list[Route]) -> AsyncIterator[Transport]:
    """The given transport, or aioboto3 clients for every region of the routes, open for the run."""
    if given is not None:
        yield given
        return
    async with AioBotoTransport.open(
        [r.region for r in routes],
        endpoint_url=spec.model.endpoint_url or None,
        max_in_flight=spec.limits.max_in_flight,
        timeout_s=spec.retry.timeout_s,
    ) as bedrock:
        yield bedrock


PREFLIGHT_BODY = dumps_body(
    {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "ping"}],
    }
)


PREFLIGHT_TIMEOUT_S = 10.0
"""How long a preflight ping may take (at most ``[retry] timeout_s``): a 1-token answer takes a second
or two, so a route silent for this long cannot be reached."""


class _Probe(NamedTuple):
    """What one route's preflight ping found."""

    route: Route
    error: BaseException | None

    @property
    def reached(self) -> bool:
        """Bedrock answered: an answer, or an error with Bedrock's request id (a throttle, a 5xx)."""
        return self.error is None or getattr(self.error, "request_id", None) is not None


async def _preflight(
    bedrock: Transport,
    router: Router,
    routes: list[Route],
    *,
    timeout_s: float = PREFLIGHT_TIMEOUT_S,
    where: Callable[[Route], str] = lambda route: route.name,
) -> None:
    """One minimal request per route, all at once: drop the routes that deny access or do not exist,
    and stop the job when Bedrock cannot be reached at all.

    Throttles and 5xx do not drop a route (they say nothing about access). No route left: exit 2.
    No route where Bedrock answered (refused, timed out, DNS, TLS, not Bedrock): exit 2 too, naming
    the endpoint and the cause, before any row is sent or marked. ``where`` names a route's endpoint.
    """
    probes: list[_Probe] = []

    async def ping(route: Route) -> None:
        try:
            with anyio.fail_after(timeout_s):
                await bedrock.invoke(route, PREFLIGHT_BODY)
        except Exception as exc:
            probes.append(_Probe(route, exc))
        else:
            probes.append(_Probe(route, None))

    async with anyio.create_task_group() as tg:
        for route in routes:
            tg.start_soon(ping, route)
    unreachable: dict[str, None] = {}  # "endpoint: cause", each once, in route order
    for probe in sorted(probes, key=lambda p: routes.index(p.route)):
        route, error = probe
        if error is None:
            log.info("route.preflight_ok", route=route.name)
        elif isinstance(error, RouteError):
            router.remove(route, str(error))
            log.warning(
                "route.preflight_failed", route=route.name, error_type=error.error_type, message=str(error)
            )
        elif probe.reached:
            log.info("route.preflight_inconclusive", route=route.name, error=type(error).__name__)
        else:
            if isinstance(error, EndpointUnreachableError):
                endpoint, cause = error.endpoint, error.cause
            elif isinstance(error, TimeoutError | ModelTimeoutError):
                endpoint, cause = where(route), f"no answer within {timeout_s:g} s"
            else:
                endpoint, cause = where(route), " ".join(str(error).split()) or type(error).__name__
            log.warning("route.unreachable", route=route.name, endpoint=endpoint, cause=cause)
            unreachable[f"{endpoint}: {cause}"] = None
    if not router.active:
        reasons = "; ".join(f"{r.name}: {why}" for r, why in router.removed().items())
        raise PreflightError(f"no route passed preflight ({reasons})")
    if unreachable and all(not p.reached for p in probes if p.route in router.active):
        causes = "; ".join(unreachable)
        raise PreflightError(
            f"cannot reach Bedrock ({causes}): nothing was sent and no row was marked "
            "(check the network, proxy settings and --endpoint-url, or rerun when it is back)"
        )


LOGGING_CHECK_TIMEOUT_S = 15.0


async def check_invocation_logging(spec: JobSpec, routes: list[Route]) -> dict[str, bool | None]:
    """Preflight's look at model invocation logging in each region the routes call from: a warning
    (``logging.invocation_off``) where it is off, since AWS recommends keeping 30 days of invocation
    logs. Never stops the job: a region that cannot be asked is logged as unknown. Returns region ->
    on (True), off (False) or unknown (None)."""
    found: dict[str, bool | None] = {}
    regions = list(dict.fromkeys(r.region for r in routes))
    try:
        async with AioBotoControlPlane.open(endpoint_url=spec.model.endpoint_url or None) as plane:
            for region in regions:
                try:
                    with anyio.fail_after(LOGGING_CHECK_TIMEOUT_S):
                        destinations = logging_destinations(await plane.invocation_logging(region))
                except (BatchError, TimeoutError) as exc:
                    found[region] = None
                    log.info("logging.invocation_unknown", region=region, error=type(exc).__name__)
                    continue
                found[region] = bool(destinations)
                if destinations:
                    log.info("logging.invocation_on", region=region, destinations=list(destinations))
                else:
                    log.warning(
                        "logging.invocation_off",
                        region=region,
                        hint="AWS recommends keeping 30 days of invocation logs; README.md, "
                        "'Invocation logging', says how to turn it on",
                    )
    except BatchError as exc:  # no credentials for the control plane
        log.info("logging.invocation_unknown", regions=regions, error=type(exc).__name__)
    return found


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
