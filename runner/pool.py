"""The one task group: a reader feeds records to workers, workers call Bedrock, one writer persists.

::

    reader ──records (bounded)──▶ workers x max_in_flight ──results (bounded)──▶ writer ──▶ sink
                                     │ admission (limits) · route (routing) · retries (tenacity)

Streams are bounded, so memory depends on ``max_in_flight`` and the batch size, never on the input.
Each row is retried with exponential backoff and full jitter (tenacity), each attempt on the route
the router picks; a row out of attempts, or with a permanent error, becomes an ``error`` result. A
row never vanishes: it either has a result or stays pending (stopped before it was sent).

Stopping (Ctrl-C, SIGTERM, the cost cap): the reader stops, queued rows stay pending, requests in
flight get ``grace_s`` to finish, then are cancelled. Results already produced always reach the
writer (their send is shielded), because they are paid for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, stop_any
from tenacity.stop import stop_base
from tenacity.wait import wait_random_exponential

from runner.bedrock import Transport
from runner.errors import (
    EndpointUnavailableError,
    EndpointUnreachableError,
    InvocationError,
    MalformedResponseError,
    ModelError,
    ModelNotReadyError,
    PermanentError,
    RetryableError,
    RouteError,
    ThrottledError,
)
from runner.limits import Admission, Outcome
from runner.routing import Router
from runner.sink import PartSink
from runner.spec import RetrySection
from runner.types import Completion, Record, Result, Route, Usage

log = structlog.get_logger("runner.pool")

STOP_INTERRUPTED = "interrupted"
"""Why a run stopped early (``Pool.stopped``, ``JobReport.stopped``): Ctrl-C or SIGTERM, exit 130."""
STOP_COST_CAP = "max_cost_usd reached"
"""Why a run stopped early: the next call could pass ``[limits] max_cost_usd`` (the rows stay pending)."""
STOP_UNREACHABLE = "Bedrock could not be reached"
"""Why a run stopped early: a row ran out of attempts while Bedrock could not be reached at all
(connection refused, DNS, TLS, not Bedrock). The row and the rest stay pending, none is marked failed:
the endpoint failed, not the rows. ``Pool.stopped`` adds the endpoint and the cause after a colon."""

Pricer = Callable[[str, Usage], float]


T = TypeVar("T")


async def _receive(recv: MemoryObjectReceiveStream[T]) -> T:
    """The next item of ``recv``: at once when one is waiting, else wait for it (``EndOfStream`` at the end).

    ``receive()`` yields to the event loop even when an item is waiting. A task that drains a busy
    stream that way takes one loop iteration per item, and every iteration polls the sockets with a
    zero timeout for the few answers that arrived meanwhile: at zero latency the pool ran one loop
    iteration per row instead of one per many answers (bench/notes.md, "Measurements behind the code").
    """
    try:
        return recv.receive_nowait()
    except anyio.WouldBlock:
        return await recv.receive()


@dataclass(eq=False)
class Counters:
    """Live figures of a run (mutated by the pool, read by the progress display and the summary)."""

    ok: int = 0
    failed: int = 0
    attempts: int = 0
    throttles: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    started: float = field(default_factory=time.monotonic)
    first_request_at: float | None = None

    def add_ok(self, usage: Usage, cost_usd: float) -> None:
        """Count one ok row, its tokens and its cost."""
        self.ok += 1
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cost_usd += cost_usd


class CostCap:
    """``max_cost_usd``: admit a call only while spent + reserved + its worst case stays under the cap.

    Both lanes use it: the pool reserves a row's worst case per attempt, the batch lane a shard's.
    """

    def __init__(self, cap_usd: float, pricer: Pricer, spent_usd: float = 0.0) -> None:
        self.cap = cap_usd
        self.pricer = pricer
        self.spent = spent_usd
        self.reserved = 0.0

    def try_reserve(self, usd: float) -> bool:
        """Reserve ``usd`` if spent + reserved + ``usd`` stays under the cap; False (nothing held) if not."""
        if self.spent + self.reserved + usd > self.cap:
            return False
        self.reserved += usd
        return True

    def hold(self, usd: float) -> None:
        """Reserve ``usd`` whatever the cap says: money a running batch job may already be spending."""
        self.reserved += usd

    def release(self, usd: float) -> None:
        """Give back a reservation."""
        self.reserved -= usd

    def spend(self, usd: float) -> None:
        """Count money spent."""
        self.spent += usd

    def reserve(self, route: Route, record: Record) -> float | None:
        """Reserve the worst case of one attempt at ``record``; ``None`` when the cap refuses it."""
        worst = self.pricer(route.model_id, Usage(record.estimated_input_tokens, record.max_tokens))
        return worst if self.try_reserve(worst) else None

    def settle(self, reserved: float, cost: float) -> None:
        """An attempt ended: release its reservation, count what it cost."""
        self.release(reserved)
        self.spend(cost)


class StopOnModelErrors(stop_base):
    """ModelErrorException (424) rarely heals, nor does a 200 that is not a Messages response: give
    them fewer attempts than throttles or 5xx get."""

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts

    def __call__(self, retry_state: RetryCallState) -> bool:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        return (
            isinstance(exc, ModelError | MalformedResponseError)
            and retry_state.attempt_number >= self.attempts
        )


THROTTLES_PER_ATTEMPT = 8
"""Throttles one attempt absorbs before it counts as failed (and tenacity backs off): admission
paces a throttled row, so more than a few in a row means the quota is gone, not busy."""


class _CapReached(Exception):
    """Raised inside a worker when the cost cap refuses a row: the row stays pending."""


class _Unreached(Exception):
    """Raised inside a worker when a row gave up while Bedrock was unreachable: the row stays pending."""


@dataclass(eq=False, slots=True)
class _RowState:
    attempts: int = 0
    last_route: Route | None = None
    served_by: Route | None = None


@dataclass(frozen=True, slots=True)
class PoolOutcome:
    """How a pool run ended: ``stopped`` is the reason admission stopped early, if it did; ``workers``
    is how many worker tasks it ran."""

    stopped: str | None
    workers: int = 0


class Pool:
    """Runs records through Bedrock with bounded concurrency and hands results to a sink."""

    def __init__(
        self,
        *,
        transport: Transport,
        router: Router,
        admission: Admission,
        sink: PartSink,
        retry: RetrySection,
        pricer: Pricer,
        max_in_flight: int,
        cost_cap: CostCap | None = None,
        grace_s: float = 30.0,
        counters: Counters | None = None,
    ) -> None:
        self.transport = transport
        self.router = router
        self.admission = admission
        self.sink = sink
        self.retry = retry
        self.pricer = pricer
        self.max_in_flight = max_in_flight
        self.cost_cap = cost_cap
        self.grace_s = grace_s
        self.counters = counters or Counters()
        self._stopped: str | None = None
        self._stop_event = anyio.Event()
        self._work_scope: anyio.CancelScope | None = None
        self._commit_wanted = anyio.Event()
        self._workers_done = False
        self._unreachable: EndpointUnreachableError | None = None
        """The last failure to reach Bedrock, cleared as soon as Bedrock answers anything."""
        self._retrying = AsyncRetrying(
            stop=stop_any(
                stop_after_attempt(retry.max_attempts), StopOnModelErrors(retry.model_error_attempts)
            ),
            wait=wait_random_exponential(multiplier=retry.backoff_initial_s, max=retry.backoff_max_s),
            retry=retry_if_exception_type(RetryableError),
            sleep=anyio.sleep,
            reraise=True,
        )

    @property
    def stopped(self) -> str | None:
        return self._stopped

    def stop(self, reason: str) -> None:
        """Stop admitting rows; in-flight requests get ``grace_s`` before they are cancelled."""
        if self._stopped is None:
            self._stopped = reason
            self._stop_event.set()
            log.info("job.stopping", reason=reason, in_flight=self.admission.in_flight)

    def cancel_now(self) -> None:
        """Cancel in-flight requests at once (second Ctrl-C); finished results still reach the sink."""
        if self._work_scope is not None:
            self._work_scope.cancel()

    async def run(self, batches: Iterator[list[Record]], *, rows: int | None = None) -> PoolOutcome:
        """Send the records of ``batches`` and write their results; ``rows`` (at most how many records
        will come) bounds the workers, so ``max_in_flight = 4096`` on a 50-row input starts 50."""
        workers = self.max_in_flight if rows is None else max(1, min(self.max_in_flight, rows))
        records_send, records_recv = anyio.create_memory_object_stream[Record](workers)
        timer = anyio.CancelScope()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._committer)
            tg.start_soon(self._grace_timer, timer)
            with anyio.CancelScope() as self._work_scope:
                async with anyio.create_task_group() as work:
                    work.start_soon(self._reader, batches, records_send)
                    async with records_recv:
                        for _ in range(workers):
                            work.start_soon(self._worker, records_recv.clone())
            self._workers_done = True
            self._commit_wanted.set()
            timer.cancel()
        return PoolOutcome(stopped=self._stopped, workers=workers)

    async def _grace_timer(self, scope: anyio.CancelScope) -> None:
        """After a stop, give requests in flight ``grace_s`` to finish, then cancel them."""
        with scope:
            await self._stop_event.wait()
            await anyio.sleep(self.grace_s)
            if self.admission.in_flight:
                log.warning("job.grace_expired", in_flight=self.admission.in_flight, grace_s=self.grace_s)
            self.cancel_now()

    async def _reader(self, batches: Iterator[list[Record]], send: MemoryObjectSendStream[Record]) -> None:
        async with send:
            while not self._stop_event.is_set():
                batch = await anyio.to_thread.run_sync(next, batches, None)
                if batch is None:
                    break
                for record in batch:
                    if self._stop_event.is_set():
                        break
                    # send() yields to the loop before every record, which fed the workers one
                    # record per loop iteration (~4 of 128 in flight at zero latency); fill the
                    # buffer without yielding and wait only when it is full.
                    try:
                        send.send_nowait(record)
                    except anyio.WouldBlock:
                        await send.send(record)

    async def _worker(self, recv: MemoryObjectReceiveStream[Record]) -> None:
        async with recv:
            while True:
                try:
                    record = await _receive(recv)
                except anyio.EndOfStream:
                    return
                if self._stopped is not None:
                    continue  # stays pending: never sent, never paid
                try:
                    result = await self._process(record)
                except _CapReached:
                    self.stop(STOP_COST_CAP)
                    continue
                except _Unreached:
                    continue
                # Journal the result in the same step that produced it (no await in between): a
                # paid answer sitting in a queue would be lost, and paid for again, at a hard kill.
                self.sink.add(result)
                if self.sink.due():
                    self._commit_wanted.set()

    async def _committer(self) -> None:
        """Turn journalled results into part files when a part is due, and once more at the end."""
        while True:
            with anyio.move_on_after(self.sink.part_seconds):
                await self._commit_wanted.wait()
            self._commit_wanted = anyio.Event()
            finished = self._workers_done
            if self.sink.due() or (finished and self.sink.buffered):
                number, rows = self.sink.take_part()
                with anyio.CancelScope(shield=True):  # never abandon a part half-written
                    await anyio.to_thread.run_sync(self.sink.commit, number, rows)
            if finished:
                return

    # -- one row ------------------------------------------------------------------------------

    async def _process(self, record: Record) -> Result:
        started = time.time()
        if record.body is None:
            self.counters.failed += 1
            return Result.failed(
                record, error_type=record.error_type, error_message=record.error_message,
                started_at=started, finished_at=started,
            )  # fmt: skip
        row = _RowState()
        try:
            # Fast path: most rows succeed at the first attempt, and tenacity's machinery costs
            # ~25 µs per row. A retryable failure enters tenacity as its attempt 1 (re-raised
            # there), so attempt counting, stop conditions and backoff are exactly tenacity's.
            first: RetryableError | None = None
            try:
                completion = await self._attempt(record, row)
            except RetryableError as exc:
                first = exc
            if first is not None:
                replay = [first]
                async for attempt in self._retrying.copy():
                    with attempt:
                        if replay:
                            raise replay.pop()
                        completion = await self._attempt(record, row)
        except InvocationError as exc:
            if isinstance(exc, RetryableError) and self._unreachable is not None:
                unreachable = self._unreachable
                self.stop(f"{STOP_UNREACHABLE}: {unreachable.endpoint}: {unreachable.cause}")
                raise _Unreached from exc
            self.counters.failed += 1
            retryable = isinstance(exc, RetryableError)
            message = str(exc)
            if retryable:
                message = f"gave up after {row.attempts} attempts: {message}"
            return Result.failed(
                record, error_type=exc.error_type, error_message=message, started_at=started,
                finished_at=time.time(), route=row.last_route, attempts=row.attempts,
                request_id=exc.request_id, retryable=retryable,
            )  # fmt: skip
        route = row.served_by
        assert route is not None
        cost = self.pricer(route.model_id, completion.usage)
        self.counters.add_ok(completion.usage, cost)
        return Result.answered(
            record, completion, route=route, attempts=row.attempts, cost_usd=cost,
            started_at=started, finished_at=time.time(),
        )  # fmt: skip

    async def _attempt(self, record: Record, row: _RowState) -> Completion:
        """One attempt: get admitted on a route, call. Throttles and route errors move on at once.

        A throttle is the quota talking, not a failure of the row: admission (which has just
        learnt from it) decides when and where the row goes next, without tenacity's backoff.
        Only :data:`THROTTLES_PER_ATTEMPT` throttles in a row make it a failed attempt.
        """
        assert record.body is not None
        throttles = 0
        while True:
            routes = self.router.candidates(after=row.last_route)
            if not routes and self.router.active:
                # Every breaker is open: wait for the first cool-down to end (it may let this row
                # be the probe). Still nothing: a failed attempt, so a long outage ends the row as
                # a retryable error that a rerun redoes, instead of hanging the job.
                await anyio.sleep(min(self.router.retry_in(), self.retry.backoff_max_s))
                routes = self.router.candidates(after=row.last_route)
            if not routes:
                if not self.router.active:
                    raise RouteError("no usable route is left (every route was denied or not found)")
                raise EndpointUnavailableError(
                    f"every route is cooling down after repeated failures (next probe in "
                    f"{self.router.retry_in():.0f} s)"
                )
            reserved_cost = 0.0
            if self.cost_cap is not None:
                reserved = self.cost_cap.reserve(routes[0], record)
                if reserved is None:
                    raise _CapReached
                reserved_cost = reserved
            tokens = record.estimated_input_tokens + record.max_tokens
            try:
                permit = await self.admission.acquire(routes, tokens)
            except BaseException:
                if self.cost_cap is not None:
                    self.cost_cap.settle(reserved_cost, 0.0)
                raise
            route = permit.route
            self.router.dispatched(route)
            row.attempts += 1
            self.counters.attempts += 1
            if self.counters.first_request_at is None:
                self.counters.first_request_at = time.monotonic()
            usage: Usage | None = None
            outcome: Outcome = "failed"
            server_s: float | None = None
            try:
                # The transport keeps the deadline (``[retry] timeout_s``): an anyio.fail_after here as
                # well cost ~0.03 ms of CPU per row (5 % of a row at zero latency) for a second timer.
                completion = await self.transport.invoke(route, record.body)
                usage = completion.usage
                if completion.server_latency_ms is not None:
                    server_s = completion.server_latency_ms / 1000.0
                outcome = "ok"
            except ThrottledError as exc:
                self._unreachable = None
                outcome = "throttled"
                self.counters.throttles += 1
                # A quota's 429 leaves the row its order of routes: the route's quota model has just
                # learnt from it and paces the row, or spills it to the next route when it holds it
                # back. (Moved on at once, every row a capacity 429 refused queued for a regional
                # route, ahead of the rest of the queue, while ``global.`` stood idle.) A model not
                # ready on this route is no quota: the row tries the next.
                if isinstance(exc, ModelNotReadyError):
                    row.last_route = route
                throttles += 1
                if throttles >= THROTTLES_PER_ATTEMPT:
                    raise
                continue
            except MalformedResponseError:
                row.last_route = route
                raise  # the endpoint answered, with no answer in it: not ill health, no breaker
            except RouteError as exc:
                self._unreachable = None
                row.last_route = route
                self.router.remove(route, str(exc))
                log.warning("route.removed", route=route.name, reason=exc.error_type, message=str(exc))
                if not self.router.active:
                    raise
                continue
            except RetryableError as exc:
                row.last_route = route
                if isinstance(exc, EndpointUnreachableError):
                    self._unreachable = exc
                elif exc.request_id is not None:
                    self._unreachable = None
                if self.router.failure(route):
                    log.warning("route.breaker_opened", route=route.name, error_type=exc.error_type)
                raise
            except PermanentError:
                self._unreachable = None
                row.last_route = route
                raise  # the route is fine, the row is bad: no breaker, no limit change
            except BaseException:
                outcome = "cancelled"
                raise
            finally:
                self.admission.release(
                    permit, outcome, usage, server_s=server_s, max_tokens=record.max_tokens
                )
                if self.cost_cap is not None:
                    cost = self.pricer(route.model_id, usage) if usage is not None else 0.0
                    self.cost_cap.settle(reserved_cost, cost)
            self._unreachable = None
            self.router.success(route)
            row.served_by = route
            return completion
