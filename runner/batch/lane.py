"""The batch lane: rows go to Bedrock batch inference (half price, no quota), results come back as rows.

What one run of a ``mode = "batch"`` job does here, in order, before the on-demand pool runs::

    load _job/batch.json  (what earlier runs submitted: re-attach, never submit again)
    plan      rows not done and never sharded -> shard files in _job/batch/   (batch.shards, pure)
    record    the new shards in _job/batch.json                       <- before anything leaves
    submit    upload shard -> s3, CreateModelInvocationJob (clientRequestToken from the shard),
              record the jobArn                                       <- right after the answer
    poll      GetModelInvocationJob, waits growing poll_initial_s -> poll_max_s
    collect   each ended job's output -> result rows through the PartSink (lane = "batch",
              cost at the batch price), then mark the shard collected   <- after its parts commit

Rows that failed inside a batch job, rows Bedrock never answered, and the rows no shard took (the
remainder below ``min_records``) have no result row yet, so the pool that runs next finishes them
on-demand. Each step is recorded before the next one is taken, so a runner killed at any point and
started again picks up the same jobs: a shard with a jobArn is only polled; a shard whose create was
sent but not answered is looked up by name and token, then created again with the same token, which
Bedrock answers with the existing job. No shard is ever paid for twice.

The lane owns the sink while it runs (the pool has not started), and stops polling within a quarter
of a second of Ctrl-C: batch jobs keep running on AWS, and the next run collects them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence, Set
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import anyio
import pyarrow.parquet as pq
import structlog

from runner import storage
from runner.batch.shards import (
    MANIFEST_FILE,
    Manifest,
    Shard,
    client_request_token,
    job_name,
    output_name,
    parse_output_line,
    plan_shards,
    safe_name,
)
from runner.batch.state import BATCH_FILE, FINAL_STATUSES, SHARD_DIR, BatchState, ShardState
from runner.bedrock import AioBotoControlPlane, ControlPlane
from runner.errors import (
    AccessDeniedError,
    BatchJobError,
    InvocationError,
    QuotaExceededError,
    RetryableError,
    RouteNotFoundError,
)
from runner.pool import STOP_COST_CAP
from runner.schemas import INDEX_COLUMN
from runner.sink import PartSink
from runner.types import Completion, Record, Result, Route

if TYPE_CHECKING:
    from runner.pool import CostCap, Counters, Pool
    from runner.pricing import PriceTable
    from runner.source import Source
    from runner.spec import JobSpec
    from runner.state import JobDir

log = structlog.get_logger("runner.batch_lane")

STOP_CHECK_S = 0.25
CREATE_ATTEMPTS = 3
CREATE_BACKOFF_S = 1.0


# -- the lane ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LaneOutcome:
    """How the lane ended: ``stopped`` says why it left jobs in flight (Ctrl-C, the cost cap)."""

    stopped: str | None
    shards: int
    in_flight: int
    ok: int
    to_on_demand: int


def _timestamp(value: Any) -> float | None:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return None


class BatchLane:
    """Plans, submits, polls and collects the shards of one job (see the module docstring)."""

    def __init__(
        self,
        *,
        spec: JobSpec,
        job: JobDir,
        source: Source,
        sink: PartSink,
        prices: PriceTable,
        route: Route,
        counters: Counters,
        control: ControlPlane,
        should_stop: Callable[[], str | None] = lambda: None,
        cost_cap: CostCap | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.spec = spec
        self.job = job
        self.source = source
        self.sink = sink
        self.prices = prices
        self.route = route
        self.counters = counters
        self.control = control
        self.should_stop = should_stop
        self.cost_cap = cost_cap
        self._sleep = sleep
        self.state_file = job.work / BATCH_FILE
        self.shard_dir = job.work / SHARD_DIR
        self._reserved: dict[int, float] = {}
        self._stopped: str | None = None

    # -- state ----------------------------------------------------------------------------------

    def _load(self) -> BatchState:
        state = BatchState.load(self.state_file)
        if state is None:
            job_key = secrets.token_hex(8)
            base = self.spec.batch.s3_uri
            prefix = storage.join(base, f"{safe_name(self.spec.name)}-{job_key}")
            state = BatchState(job_key=job_key, prefix=prefix)
        return state

    def _save(self, state: BatchState) -> None:
        state.save(self.state_file)

    def _stop_reason(self) -> str | None:
        return self._stopped or self.should_stop()

    # -- planning -------------------------------------------------------------------------------

    def _sharded_keys(self, state: BatchState) -> set[int]:
        """Resume keys of every row some shard took: they never go to a second batch job."""
        keys: set[int] = set()
        for s in state.shards:
            path = self.shard_dir / s.shard.rows_file
            keys.update(pq.read_table(path, columns=["request_key"]).column("request_key").to_pylist())
        return keys

    def _drop_unsent(self, state: BatchState) -> None:
        """Forget shards never uploaded whose local file is gone: nothing of them left the machine,
        so their rows are simply planned again (into new shards with new tokens)."""
        keep = [s for s in state.shards if s.uploaded or (self.shard_dir / s.shard.file).exists()]
        if len(keep) != len(state.shards):
            dropped = [s.shard.number for s in state.shards if s not in keep]
            state.shards = keep
            self._save(state)
            log.warning("batch.shards_replanned", shards=dropped, reason="local shard file missing")

    def _clean_strays(self, state: BatchState) -> None:
        """Delete shard files no recorded shard owns (a plan a crash cut short)."""
        owned = {s.shard.file for s in state.shards} | {s.shard.rows_file for s in state.shards}
        for path in self.shard_dir.iterdir():
            if path.name not in owned:
                path.unlink()

    async def _plan(self, state: BatchState, done: Set[int]) -> list[ShardState]:
        """Write shards for the rows not done and never sharded; stops between shards on Ctrl-C."""
        b = self.spec.batch
        exclude = set(done) | await anyio.to_thread.run_sync(self._sharded_keys, state)
        shards = plan_shards(
            self.source.records(exclude),
            self.shard_dir,
            first_number=state.next_number(),
            min_records=b.min_records,
            max_records=b.max_records,
            max_bytes=b.max_shard_bytes,
            keep_fields=self.source.keep_fields(),
            id_type=self.source.id_type(),
        )
        planned: list[ShardState] = []
        try:
            while self._stop_reason() is None:
                shard = await anyio.to_thread.run_sync(next, shards, None)
                if shard is None:
                    break
                planned.append(self._new_shard(state, shard))
        finally:
            await anyio.to_thread.run_sync(shards.close)
        if self._stop_reason() is not None:
            return []  # nothing recorded: the next run plans again from scratch
        return planned

    def _new_shard(self, state: BatchState, shard: Shard) -> ShardState:
        name = job_name(self.spec.name, state.job_key, shard.number)
        return ShardState(
            shard=shard,
            model_id=self.route.model_id,
            region=self.route.region,
            job_name=name,
            token=client_request_token(state.job_key, shard.number, shard.sha256),
            input_uri=storage.join(state.prefix, "input", shard.file),
            output_uri=storage.join(state.prefix, "output") + "/",
        )

    # -- submitting -----------------------------------------------------------------------------

    def _worst_cost(self, s: ShardState) -> float:
        rates = self.prices.rates(s.model_id, lane="batch")
        return s.shard.input_tokens * rates.input_tokens + s.shard.max_output_tokens * rates.output_tokens

    def _upload(self, s: ShardState) -> None:
        local = self.shard_dir / s.shard.file
        try:
            storage.upload_file(local, s.input_uri)
        except storage.ArrowError as exc:
            raise BatchJobError(f"cannot upload {local.name} to {s.input_uri}: {exc}") from exc

    async def _submit(self, state: BatchState, s: ShardState) -> bool:
        """Upload and create one shard's job; False when Bedrock's job quota is full (try later)."""
        if self.cost_cap is not None and s.shard.number not in self._reserved:
            worst = self._worst_cost(s)
            if not self.cost_cap.try_reserve(worst):
                self._stopped = STOP_COST_CAP
                log.warning(
                    "batch.cost_cap",
                    shard=s.shard.number,
                    worst_usd=round(worst, 4),
                    cap_usd=self.cost_cap.cap,
                )
                return False
            self._reserved[s.shard.number] = worst
        if not s.uploaded:
            await anyio.to_thread.run_sync(self._upload, s)
            s.uploaded = True
            self._save(state)
            log.info("batch.uploaded", shard=s.shard.number, uri=s.input_uri, bytes=s.shard.bytes)
        if s.create_sent:
            # A create went out and its answer was lost (crash, timeout): did Bedrock make the job?
            try:
                found = await self.control.find_job(s)
            except InvocationError as exc:  # no List permission, a blip: the token still protects
                log.warning("batch.find_failed", shard=s.shard.number, error_type=exc.error_type)
                found = None
            if found is not None:
                self._submitted(state, s, found, adopted=True)
                return True
        s.create_sent = True
        self._save(state)  # before the call: the next run knows to look before creating again
        b = self.spec.batch
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                arn = await self.control.create_job(s, role_arn=b.role_arn, timeout_hours=b.timeout_hours)
            except QuotaExceededError as exc:
                log.info("batch.quota_full", shard=s.shard.number, message=str(exc))
                return False
            except RetryableError as exc:
                if attempt == CREATE_ATTEMPTS:
                    raise BatchJobError(
                        f"CreateModelInvocationJob for shard {s.shard.number} failed {attempt} times "
                        f"({exc}); rerun to try again (the same token cannot make a second job)"
                    ) from exc
                log.warning("batch.create_retried", shard=s.shard.number, error_type=exc.error_type)
                await self._sleep(CREATE_BACKOFF_S * 2 ** (attempt - 1))
            except InvocationError as exc:
                raise BatchJobError(
                    f"Bedrock refused batch job {s.job_name} for {s.model_id} in {s.region}: {exc} "
                    "(check [batch] role_arn, its trust policy and S3 permissions; docs/batch.md)"
                ) from exc
            else:
                self._submitted(state, s, arn, adopted=False)
                return True
        return False  # pragma: no cover - the loop returns or raises

    def _submitted(self, state: BatchState, s: ShardState, arn: str, *, adopted: bool) -> None:
        s.job_arn = arn
        s.status = "Submitted"
        s.submitted_at = time.time()
        self._save(state)
        (self.shard_dir / s.shard.file).unlink(missing_ok=True)  # in S3 now; the rows file stays
        log.info(
            "batch.submitted", shard=s.shard.number, job_arn=arn, records=s.shard.records, adopted=adopted
        )

    # -- polling and collecting -----------------------------------------------------------------

    async def _poll(self, state: BatchState, s: ShardState) -> dict[str, Any] | None:
        """The job's description once it has ended, else ``None``; blips are logged and retried later."""
        try:
            job = await self.control.get_job(s)
        except RouteNotFoundError as exc:
            log.error("batch.job_not_found", shard=s.shard.number, job_arn=s.job_arn, message=str(exc))
            job = {"status": "NotFound", "message": str(exc)}
        except AccessDeniedError as exc:
            raise BatchJobError(f"cannot read batch job {s.job_arn}: {exc}") from exc
        except InvocationError as exc:
            log.warning("batch.poll_failed", shard=s.shard.number, error_type=exc.error_type)
            return None
        status = str(job.get("status") or "")
        if status != s.status:
            s.status = status
            s.message = job.get("message")
            self._save(state)
            log.info("batch.status", shard=s.shard.number, status=status, message=s.message)
        if status in FINAL_STATUSES:
            s.ended_at = _timestamp(job.get("endTime")) or time.time()
            return job
        return None

    def _output_base(self, s: ShardState, job: dict[str, Any]) -> str:
        """``{outputDataConfig s3Uri}/{job id}``, where Bedrock writes a job's files."""
        configured = job.get("outputDataConfig", {}).get("s3OutputDataConfig", {}).get("s3Uri")
        assert s.job_arn is not None
        return storage.join(configured or s.output_uri, s.job_arn.rsplit("/", 1)[-1])

    def _collect(self, s: ShardState, job: dict[str, Any]) -> None:
        """Stream the job's output into result rows (a worker thread; the lane owns the sink now).

        Parts are committed before the shard is marked collected: a crash in between collects the
        shard again, and the later part supersedes the earlier rows of the same positions.
        """
        base = self._output_base(s, job)
        rows = pq.read_table(self.shard_dir / s.shard.rows_file)
        ids = rows.column("id")
        if ids.type != self.source.id_type():  # a rows file written before ids kept their type
            rows = rows.set_column(rows.schema.get_field_index("id"), "id", ids.cast(self.source.id_type()))
        keep_names = [n for n in rows.column_names if n not in (INDEX_COLUMN, "id", "request_key")]
        columns = {name: rows.column(name).to_pylist() for name in rows.column_names}
        meta: dict[int, int] = {index: i for i, index in enumerate(columns[INDEX_COLUMN])}
        seen: set[int] = set()
        errors: dict[str, int] = {}
        ok = 0
        started = s.submitted_at or time.time()
        finished = s.ended_at or time.time()
        out_uri = storage.join(base, output_name(PurePosixPath(s.input_uri).name))
        try:
            lines: Iterator[bytes] = storage.iter_lines(out_uri)
            for line in lines:
                try:
                    record = parse_output_line(line)
                except ValueError as exc:
                    log.warning("batch.bad_output_line", shard=s.shard.number, reason=str(exc))
                    continue
                i = meta.get(record.index)
                if i is None or record.index in seen:
                    continue
                seen.add(record.index)
                if not record.ok:
                    code = record.error_code or "error"
                    errors[code] = errors.get(code, 0) + 1
                    continue
                cost = self.prices.cost(s.model_id, record.usage, lane="batch")
                row = Record(
                    index=record.index, id=columns["id"][i], key=columns["request_key"][i], body=None,
                    max_tokens=0, estimated_input_tokens=0, keep={n: columns[n][i] for n in keep_names},
                )  # fmt: skip
                answer = Completion(
                    text=record.text or "", stop_reason=record.stop_reason, usage=record.usage,
                    request_id=s.job_arn, latency_ms=None, content=record.content,
                    tool_input=record.tool_input,
                )  # fmt: skip
                result = Result.answered(
                    row, answer, route=s.route, attempts=1, cost_usd=cost, started_at=started,
                    finished_at=finished, lane="batch",
                )  # fmt: skip
                self.sink.add(result)
                ok += 1
                self.counters.add_ok(record.usage, cost)
                if self.cost_cap is not None:
                    self.cost_cap.spend(cost)
                if self.sink.due():
                    self.sink.commit(*self.sink.take_part())
        except FileNotFoundError:
            log.warning("batch.no_output", shard=s.shard.number, uri=out_uri, status=s.status)
        except storage.ArrowError as exc:
            raise BatchJobError(
                f"cannot read the output of batch job {s.job_arn} at {out_uri}: {exc}"
            ) from exc
        if self.sink.buffered:
            self.sink.commit(*self.sink.take_part())
        manifest_raw = None
        with contextlib.suppress(*storage.ArrowError):
            manifest_raw = storage.read_bytes(storage.join(base, MANIFEST_FILE))
        manifest = Manifest.parse(manifest_raw) if manifest_raw else None
        s.ok = ok
        s.errors = sum(errors.values())
        s.missing = len(meta) - len(seen)
        s.collected = True
        log.info(
            "batch.collected",
            shard=s.shard.number,
            status=s.status,
            ok=ok,
            errors=errors,
            missing=s.missing,
            manifest=None if manifest is None else manifest.success_records,
        )

    async def _finish(self, state: BatchState, s: ShardState, job: dict[str, Any]) -> None:
        await anyio.to_thread.run_sync(self._collect, s, job)
        reserved = self._reserved.pop(s.shard.number, None)
        if reserved is not None and self.cost_cap is not None:
            self.cost_cap.release(reserved)
        self._save(state)

    async def _wait(self, seconds: float) -> None:
        """Sleep ``seconds``, waking early when the run is told to stop."""
        deadline = time.monotonic() + seconds
        while self._stop_reason() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await self._sleep(min(STOP_CHECK_S, left))

    # -- the run --------------------------------------------------------------------------------

    async def run(self, done: Set[int]) -> LaneOutcome:
        """Re-attach, plan, submit, poll and collect until every shard is collected or the run stops."""
        self.shard_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # private, like the job directory
        state = self._load()
        self._drop_unsent(state)
        self._clean_strays(state)
        if self.cost_cap is not None:
            for s in state.shards:
                if s.in_flight:  # submitted by an earlier run: its worst case is still reserved
                    self._reserved[s.shard.number] = self._worst_cost(s)
                    self.cost_cap.hold(self._reserved[s.shard.number])
        attached = sum(1 for s in state.shards if not s.collected)
        if attached:
            log.info("batch.reattached", shards=attached, job_key=state.job_key)
        new = await self._plan(state, done)
        if new:
            state.shards.extend(new)
            self._save(state)  # recorded before anything is uploaded or submitted
            log.info(
                "batch.planned",
                shards=len(new),
                records=sum(s.shard.records for s in new),
                prefix=state.prefix,
                model_id=self.route.model_id,
                region=self.route.region,
            )
        elif not state.shards:
            log.info("batch.nothing_to_shard", min_records=self.spec.batch.min_records)
        b = self.spec.batch
        delay = b.poll_initial_s
        while self._stop_reason() is None:
            for s in state.shards:
                if self._stop_reason() is not None:
                    break
                if s.job_arn is None and not await self._submit(state, s):
                    break  # job quota full or cost cap: poll what runs, try again later
            for s in state.shards:
                if self._stop_reason() is not None:
                    break
                if s.in_flight:
                    job = await self._poll(state, s)
                    if job is not None:
                        await self._finish(state, s, job)
            if all(s.collected for s in state.shards):
                break
            if self._stopped is not None and not any(s.in_flight for s in state.shards):
                break  # the cost cap stopped submitting and nothing runs any more
            await self._wait(delay)
            delay = min(delay * 2, b.poll_max_s)
        stopped = self._stop_reason()
        if stopped is None and all(s.collected for s in state.shards):
            self._if_done_clean(state)
        return LaneOutcome(
            stopped=stopped,
            shards=len(state.shards),
            in_flight=sum(1 for s in state.shards if not s.collected),
            ok=sum(s.ok for s in state.shards),
            to_on_demand=sum(s.errors + s.missing for s in state.shards),
        )

    def _if_done_clean(self, state: BatchState) -> None:
        """Nothing in flight: the local JSONL copies are no longer needed (rows files stay)."""
        for s in state.shards:
            (self.shard_dir / s.shard.file).unlink(missing_ok=True)


async def run_batch_lane(
    spec: JobSpec,
    *,
    job: JobDir,
    source: Source,
    sink: PartSink,
    prices: PriceTable,
    routes: Sequence[Route],
    counters: Counters,
    pool: Pool,
    done: Set[int],
    retry_failed: bool,
    cost_cap: CostCap | None = None,
    control: ControlPlane | None = None,
) -> Iterator[list[Record]]:
    """``run_job``'s hook for ``mode = "batch"``: run the lane, then hand the pool what is left.

    Returns the records the on-demand pool should run: every row without a result now (the
    remainder, and rows the batch did not answer), or nothing when the lane stopped with jobs in
    flight (Ctrl-C, the cost cap), since those rows are already paid for in a running job.
    """
    if not routes:
        raise BatchJobError("no route is left for the batch lane (every route failed preflight)")

    async def go(plane: ControlPlane) -> LaneOutcome:
        lane = BatchLane(
            spec=spec,
            job=job,
            source=source,
            sink=sink,
            prices=prices,
            route=routes[0],
            counters=counters,
            control=plane,
            should_stop=lambda: pool.stopped,
            cost_cap=cost_cap,
        )
        return await lane.run(done)

    if control is not None:
        outcome = await go(control)
    else:
        async with AioBotoControlPlane.open(endpoint_url=spec.model.endpoint_url or None) as plane:
            outcome = await go(plane)
    log.info(
        "batch.lane_finished",
        stopped=outcome.stopped,
        shards=outcome.shards,
        in_flight=outcome.in_flight,
        ok=outcome.ok,
        to_on_demand=outcome.to_on_demand,
    )
    if outcome.stopped is not None:
        if pool.stopped is None:
            pool.stop(outcome.stopped)
        return iter(())
    return source.records(job.done_keys(retry_failed=retry_failed))
