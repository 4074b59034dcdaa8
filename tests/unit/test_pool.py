"""The pool with an in-process transport: retries, fallback, error rows, stopping, cost cap.

The transport is a fake (Bedrock is not the subject here); everything else is the real pool,
admission, router and sink writing real part files.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pyarrow.parquet as pq
import pytest

from runner.errors import (
    AccessDeniedError,
    EndpointUnavailableError,
    InvocationError,
    MalformedResponseError,
    ModelNotReadyError,
    ModelValidationError,
    ThrottledError,
)
from runner.limits import Admission
from runner.pool import CostCap, Pool
from runner.routing import Router
from runner.sink import PartSink, part_schema
from runner.spec import RetrySection
from runner.types import Completion, Record, Route, Usage

G = Route("global.anthropic.claude-haiku-4-5-20251001-v1:0", "us-east-1", "global")
U = Route("us.anthropic.claude-haiku-4-5-20251001-v1:0", "us-east-1", "us")
FAST_RETRY = RetrySection(max_attempts=5, backoff_initial_s=0.001, backoff_max_s=0.01, timeout_s=5.0)

Behaviour = Callable[[Route, dict[str, object], int], InvocationError | None]


class FakeTransport:
    """Answers by a behaviour function of (route, body, call number for that body)."""

    def __init__(self, behaviour: Behaviour, delay_s: float = 0.0) -> None:
        self.behaviour = behaviour
        self.delay_s = delay_s
        self.calls: list[tuple[Route, str]] = []
        self._seen: Counter[str] = Counter()

    async def invoke(self, route: Route, body: bytes) -> Completion:
        data = json.loads(body)
        rid = data["messages"][0]["content"]
        self._seen[rid] += 1
        self.calls.append((route, rid))
        if self.delay_s:
            await anyio.sleep(self.delay_s)
        error = self.behaviour(route, data, self._seen[rid])
        if error is not None:
            raise error
        return Completion(f"answer to {rid}", "end_turn", Usage(10, 5), f"req-{rid}", 1.0)


def records(n: int) -> Iterator[list[Record]]:
    batch = []
    for i in range(n):
        body = json.dumps({"max_tokens": 16, "messages": [{"role": "user", "content": f"r{i}"}]}).encode()
        batch.append(Record(index=i, id=f"r{i}", key=i, body=body, max_tokens=16, estimated_input_tokens=4))
        if len(batch) == 10:
            yield batch
            batch = []
    if batch:
        yield batch


def make_pool(
    tmp_path: Path, transport: FakeTransport, routes: list[Route], *, adaptive: bool = True, **kw: object
) -> Pool:
    (tmp_path / "parts").mkdir(exist_ok=True)
    (tmp_path / "journal").mkdir(exist_ok=True)
    sink = PartSink(
        tmp_path / "parts", tmp_path / "journal", schema=part_schema([]), price_table="test",
        next_number=0, part_rows=7, part_seconds=60,
    )  # fmt: skip
    return Pool(
        transport=transport,
        router=Router(routes),
        admission=Admission(routes, max_in_flight=8, adaptive=adaptive),
        sink=sink,
        retry=FAST_RETRY,
        pricer=lambda model_id, usage: 0.001,
        **{"max_in_flight": 8, **kw},  # type: ignore[arg-type]
    )


def results(tmp_path: Path) -> dict[str, dict[str, object]]:
    rows: dict[str, dict[str, object]] = {}
    for part in sorted((tmp_path / "parts").glob("part-*.parquet")):
        for row in pq.read_table(part).to_pylist():
            assert row["id"] not in rows, "a row was written twice"
            rows[row["id"]] = row
    return rows


class TestPool:
    async def test_every_row_gets_one_result(self, tmp_path: Path) -> None:
        """25 rows in, 25 ok results out, each once, across several part files."""
        pool = make_pool(tmp_path, FakeTransport(lambda r, b, n: None), [G])
        await pool.run(records(25))
        out = results(tmp_path)
        assert sorted(out) == sorted(f"r{i}" for i in range(25))
        assert {row["status"] for row in out.values()} == {"ok"}
        # part_rows=7: parts are committed as they fill (a part may hold the few rows that
        # arrived while the commit was being scheduled), never all in one at the end.
        assert len(list((tmp_path / "parts").glob("*.parquet"))) >= 2

    async def test_throttles_are_retried_to_success(self, tmp_path: Path) -> None:
        """Two throttles per row, then success: every row ok with three attempts."""

        def throttle_twice(route: Route, body: dict[str, object], n: int) -> InvocationError | None:
            return ThrottledError("slow down", code="ThrottlingException") if n <= 2 else None

        # The fake throttles every first and second call whatever the load: to admission control that
        # looks like a quota of a few hundred tokens (it would learn it and wait for the window).
        # Retrying is the subject here, so admission is fixed.
        pool = make_pool(tmp_path, FakeTransport(throttle_twice), [G], adaptive=False)
        await pool.run(records(12))
        out = results(tmp_path)
        assert all(row["status"] == "ok" and row["attempts"] == 3 for row in out.values())
        assert pool.counters.throttles == 24

    async def test_a_throttled_row_keeps_its_route_order(self, tmp_path: Path) -> None:
        """A quota's 429 leaves the row on its first route (admission paces or spills it); a model
        not ready on that route sends the row to the next one."""

        def first_call_refused(route: Route, body: dict[str, object], n: int) -> InvocationError | None:
            if n > 1:
                return None
            if body["messages"][0]["content"] == "r0":  # type: ignore[index]
                return ThrottledError("slow down", code="ThrottlingException")
            return ModelNotReadyError("loading", code="ModelNotReadyException")

        transport = FakeTransport(first_call_refused)
        pool = make_pool(tmp_path, transport, [G, U], adaptive=False)
        await pool.run(records(2))
        calls = {body: [r for r, b in transport.calls if b == body] for body in ("r0", "r1")}
        assert calls == {"r0": [G, G], "r1": [G, U]}

    async def test_validation_error_is_not_retried(self, tmp_path: Path) -> None:
        """A 400 makes an error row after exactly one attempt; the other rows go on."""

        def bad_r3(route: Route, body: dict[str, object], n: int) -> InvocationError | None:
            content = body["messages"][0]["content"]  # type: ignore[index]
            return ModelValidationError("bad", code="ValidationException") if content == "r3" else None

        transport = FakeTransport(bad_r3)
        pool = make_pool(tmp_path, transport, [G])
        await pool.run(records(10))
        out = results(tmp_path)
        assert out["r3"]["status"] == "error"
        assert out["r3"]["error_type"] == "ValidationException"
        assert out["r3"]["attempts"] == 1
        assert out["r3"]["retryable"] is False
        assert sum(1 for _, rid in transport.calls if rid == "r3") == 1
        assert sum(row["status"] == "ok" for row in out.values()) == 9

    async def test_exhausted_retries_make_a_retryable_error_row(self, tmp_path: Path) -> None:
        """A row failing with 503 on every attempt ends as a retryable error row, not lost."""

        def always_503(route: Route, body: dict[str, object], n: int) -> InvocationError | None:
            return EndpointUnavailableError("down", code="ServiceUnavailableException")

        pool = make_pool(tmp_path, FakeTransport(always_503), [G])
        await pool.run(records(3))
        out = results(tmp_path)
        assert all(r["status"] == "error" and r["retryable"] for r in out.values())
        # Calls stop once the breaker opens; attempts count only the calls really made.
        assert all(1 <= int(r["attempts"]) <= 5 for r in out.values())  # type: ignore[call-overload]
        assert all(str(r["error_message"]).startswith("gave up after") for r in out.values())

    async def test_access_denied_on_global_moves_to_regional(self, tmp_path: Path) -> None:
        """AccessDenied on global removes it; every row is served by the regional profile."""

        def deny_global(route: Route, body: dict[str, object], n: int) -> InvocationError | None:
            return (
                AccessDeniedError("no", code="AccessDeniedException") if route.geography == "global" else None
            )

        transport = FakeTransport(deny_global)
        pool = make_pool(tmp_path, transport, [G, U])
        await pool.run(records(20))
        out = results(tmp_path)
        assert {r["model_id"] for r in out.values()} == {U.model_id}
        assert all(r["status"] == "ok" for r in out.values())
        assert sum(1 for route, _ in transport.calls if route == G) <= 8  # only the first wave tried it

    async def test_failures_on_primary_fall_back(self, tmp_path: Path) -> None:
        """5xx on the primary route: rows are retried on the fallback and succeed."""

        def global_down(route: Route, body: dict[str, object], n: int) -> InvocationError | None:
            if route.geography == "global":
                return EndpointUnavailableError("down", code="ServiceUnavailableException")
            return None

        pool = make_pool(tmp_path, FakeTransport(global_down), [G, U])
        await pool.run(records(30))
        out = results(tmp_path)
        assert all(r["status"] == "ok" and r["region"] == "us-east-1" for r in out.values())
        assert {r["model_id"] for r in out.values()} == {U.model_id}

    async def test_answers_of_the_wrong_shape_end_fast_without_breakers(self, tmp_path: Path) -> None:
        """A 200 that is not a Messages response: two attempts per row (like a 424), then an error row
        naming it; the breakers stay closed, so 50 such rows take no cool-down at all."""

        def not_messages(route: Route, body: dict[str, object], n: int) -> InvocationError | None:
            return MalformedResponseError("Bedrock answered 200 with a body that is not a Messages response")

        transport = FakeTransport(not_messages)
        pool = make_pool(tmp_path, transport, [G, U])
        with anyio.fail_after(10):
            await pool.run(records(50))
        out = results(tmp_path)
        assert len(out) == 50
        assert {r["error_type"] for r in out.values()} == {"MalformedResponseError"}
        assert {r["attempts"] for r in out.values()} == {2}
        assert len(transport.calls) == 100
        assert {pool.router.state(G), pool.router.state(U)} == {"closed"}

    async def test_content_and_tool_input_reach_the_row(self, tmp_path: Path) -> None:
        """The answer's content blocks and tool input are written in the row's columns."""

        class ToolTransport(FakeTransport):
            async def invoke(self, route: Route, body: bytes) -> Completion:
                answer = await super().invoke(route, body)
                content = '[{"type":"tool_use","id":"t","name":"f","input":{"label":"x"}}]'
                return dataclasses.replace(answer, content=content, tool_input='{"label":"x"}')

        pool = make_pool(tmp_path, ToolTransport(lambda r, b, n: None), [G])
        await pool.run(records(3))
        row = results(tmp_path)["r1"]
        assert json.loads(str(row["content"]))[0]["input"] == {"label": "x"}
        assert json.loads(str(row["tool_input"])) == {"label": "x"}

    async def test_row_errors_become_error_rows_without_calls(self, tmp_path: Path) -> None:
        """A record that could not become a request is written as an error row and never sent."""
        bad = Record(index=0, id="bad", key=1, body=None, max_tokens=1, estimated_input_tokens=0,
                     error_type="NullPrompt", error_message="column 'prompt' is null")  # fmt: skip
        transport = FakeTransport(lambda r, b, n: None)
        pool = make_pool(tmp_path, transport, [G])
        await pool.run(iter([[bad]]))
        assert results(tmp_path)["bad"]["error_type"] == "NullPrompt"
        assert transport.calls == []

    async def test_stop_leaves_unsent_rows_pending(self, tmp_path: Path) -> None:
        """After stop(), queued rows are not sent; rows in flight finish and are written."""
        wave = anyio.Event()

        class WaveTransport(FakeTransport):
            async def invoke(self, route: Route, body: bytes) -> Completion:
                if len(self.calls) == 7:  # this is the eighth: the whole first wave is in flight
                    wave.set()
                return await super().invoke(route, body)

        # Answers slower than the startup waves (0.5 s to release 8): the first wave is still in
        # flight when the eighth request goes out, so no worker has taken a ninth row yet.
        transport = WaveTransport(lambda r, b, n: None, delay_s=1.5)
        pool = make_pool(tmp_path, transport, [G])

        async def stop_soon() -> None:
            await wave.wait()  # not a fixed sleep: a loaded machine may have sent nothing after 20 ms
            pool.stop("interrupted")

        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_soon)
            await pool.run(records(100))
        out = results(tmp_path)
        # At most the rows the 8 workers held when it stopped; each of them answered and written.
        assert 1 <= len(out) == len(transport.calls) <= 8
        assert all(r["status"] == "ok" for r in out.values())

    async def test_workers_are_bounded_by_the_rows(self, tmp_path: Path) -> None:
        """However large max_in_flight, a pool told how many rows may come starts no more workers."""
        transport = FakeTransport(lambda r, b, n: None)
        pool = make_pool(tmp_path, transport, [G], max_in_flight=4096)
        outcome = await pool.run(records(5), rows=5)
        assert outcome.workers == 5
        assert len(results(tmp_path)) == 5

    async def test_cost_cap_stops_admission(self, tmp_path: Path) -> None:
        """With a cap worth about five rows, the pool stops and leaves the rest pending."""
        transport = FakeTransport(lambda r, b, n: None)
        cap = CostCap(0.005, lambda model_id, usage: 0.001)
        pool = make_pool(tmp_path, transport, [G], cost_cap=cap)
        outcome = await pool.run(records(50))
        assert outcome.stopped == "max_cost_usd reached"
        assert len(results(tmp_path)) == len(transport.calls) <= 5
        assert cap.spent <= 0.005 + 1e-12


@pytest.fixture(name="anyio_backend")
def fixture_anyio_backend() -> str:
    return "asyncio"
