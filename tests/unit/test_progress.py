"""Progress that reads at 80 columns: the headline keeps percentage, done/total, rows/s and ETA first;
per-route detail (with the quota share) fits on a second line or goes; redraws stay few; and the
``job.progress`` events carry ``elapsed_s`` and ``eta_s``."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from rich.console import Console

from runner import logging as runner_logging
from runner.limits import Admission
from runner.pool import Counters
from runner.progress import duration, figures, progress_lines, report_progress, route_line
from runner.types import Route

ROUTES = [
    Route("global.anthropic.claude-haiku-4-5-20251001-v1:0", "us-east-1", "global"),
    Route("us.anthropic.claude-haiku-4-5-20251001-v1:0", "us-east-1", "us"),
]


def sample(**changes: Any) -> dict[str, Any]:
    """Figures of a job 42 % through, two routes with a known quota."""
    f: dict[str, Any] = {
        "done": 4_200,
        "total": 10_000,
        "ok": 4_197,
        "failed": 3,
        "rows_per_s": 350.2,
        "elapsed_s": 12.3,
        "eta_s": 16.4,
        "tokens": 1_234_567,
        "cost_usd": 1.2345,
        "in_flight": 64,
        "throttles": 12,
        "routes": {
            "global@us-east-1": {
                "in_flight": 61,
                "quota_tpm": 2_000_000,
                "tpm": 1_220_000,
                "quota_share": 0.61,
                "throttles_per_min": 2,
            },
            "us@us-east-1": {
                "in_flight": 3,
                "quota_tpm": 2_000_000,
                "tpm": 160_000,
                "quota_share": 0.08,
                "throttles_per_min": 0,
            },
        },
    }
    f.update(changes)
    return f


HEADLINE = re.compile(r"^(▕[^▏]*▏ )? *42% +4,200/10,000 +350\.2 rows/s +ETA +0:16")


class TestDisplay:
    @pytest.mark.parametrize("width", [80, 120])
    def test_the_essentials_come_first_and_fit(self, width: int) -> None:
        """Percentage, done/total, rows/s and ETA start the first line at 80 and 120 columns; no line
        is wider than the terminal."""
        lines = progress_lines(sample(), width)
        assert HEADLINE.match(lines[0]), lines[0]
        assert all(len(line) <= width for line in lines)

    def test_120_columns_show_the_routes_in_full(self) -> None:
        """At 120 columns the second line has each route's requests in flight, quota share and quota."""
        lines = progress_lines(sample(), 120)
        assert lines[1].startswith("global@us-east-1 61 in flight, quota 61% of 2,000k/min")
        assert "us@us-east-1 3 in flight, quota 8%" in lines[1]

    def test_80_columns_keep_the_quota_share(self) -> None:
        """At 80 columns the route line is shorter, and the quota share is still there."""
        lines = progress_lines(sample(), 80)
        assert lines[1] == "global@us-east-1 61 in flight, quota 61% · us@us-east-1 3 in flight, quota 8%"

    def test_route_detail_goes_when_there_is_no_room(self) -> None:
        """Too many routes for the width: the second line is dropped, the first stays."""
        many = {f"route{i}@us-east-1": sample()["routes"]["us@us-east-1"] for i in range(8)}
        assert route_line(sample(routes=many), 40) is None
        assert len(progress_lines(sample(routes=many), 40)) == 1

    def test_unknown_eta_and_empty_job(self) -> None:
        """Before the first row the ETA reads --:--; a job with nothing to do is 100 %."""
        assert "ETA --:--" in progress_lines(sample(eta_s=None), 80)[0]
        assert "100%  0/0" in progress_lines(sample(done=0, total=0), 80)[0]

    def test_the_bar_does_not_jitter(self) -> None:
        """The bar keeps its width while the figures change (padded counts, a reserve for the rest)."""
        first = progress_lines(sample(done=91, rows_per_s=59.4, eta_s=15, failed=0, throttles=0), 80)[0]
        later = progress_lines(sample(done=9_955, rows_per_s=1_210.5, eta_s=1, failed=12, throttles=340), 80)[
            0
        ]
        assert first.index("%") == later.index("%") > 10

    def test_durations(self) -> None:
        """Minutes:seconds, hours when needed."""
        assert [duration(16.4), duration(725), duration(10_961)] == ["0:16", "12:05", "3:02:41"]


class TestFigures:
    def test_elapsed_and_eta(self) -> None:
        """``job.progress`` figures carry elapsed_s and eta_s: the rows left at the rate since the
        first request."""
        counters = Counters(ok=50, started=time.monotonic() - 12.0)
        counters.first_request_at = time.monotonic() - 10.0
        f = figures(counters, Admission(ROUTES, max_in_flight=4), 100)
        assert f["elapsed_s"] == pytest.approx(12.0, abs=0.5)
        assert f["eta_s"] == pytest.approx(10.0, abs=0.5)
        assert f["routes"]["global@us-east-1"]["in_flight"] == 0

    def test_the_capacity_share_is_reported_per_route(self) -> None:
        """Each route's share of requests its quota model takes for capacity 429s (what a user
        watching throttles needs to tell Bedrock's capacity from the quota): 0 until it learns one."""
        admission = Admission(ROUTES, max_in_flight=4)
        f = figures(Counters(), admission, 100)
        assert {r["capacity_share"] for r in f["routes"].values()} == {0.0}
        quota = admission._routes[ROUTES[0]].quota
        assert quota is not None
        quota.capacity_share, quota._refusals = 0.0712, 0.09  # learnt, and still refused that much
        assert figures(Counters(), admission, 100)["routes"][ROUTES[0].name]["capacity_share"] == 0.071

    def test_no_eta_before_the_first_row(self) -> None:
        """Nothing done yet: no ETA rather than a division by zero."""
        assert figures(Counters(), Admission(ROUTES, max_in_flight=4), 100)["eta_s"] is None


class TestReporter:
    async def test_redraws_at_most_a_few_times_per_second(self) -> None:
        """On a terminal the display is redrawn twice a second, not on every change."""
        out = io.StringIO()
        console = Console(file=out, force_terminal=True, width=80)
        with anyio.move_on_after(2.0):
            await report_progress(
                Counters(), Admission(ROUTES, max_in_flight=4), 100, tty=True, console=console
            )
        redraws = out.getvalue().count("rows/s")
        assert 3 <= redraws <= 2 * 2 + 3  # two a second, plus the first, the last and rich's own at stop

    async def test_tty_progress_goes_to_the_events_file_only(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """On a terminal ``job.progress`` events go to events.jsonl (for the report), not to stderr."""
        events = tmp_path / "events.jsonl"
        runner_logging.configure(events_path=events, console=False)
        try:
            console = Console(file=io.StringIO(), force_terminal=True, width=80)
            with anyio.move_on_after(0.6):
                await report_progress(
                    Counters(),
                    Admission(ROUTES, max_in_flight=4),
                    10,
                    tty=True,
                    console=console,
                    interval_s=0.2,
                )
        finally:
            runner_logging.close()
        logged = [json.loads(line) for line in events.read_text().splitlines()]
        progress = [e for e in logged if e["event"] == "job.progress"]
        assert len(progress) >= 2
        assert {"elapsed_s", "eta_s", "throttles", "in_flight", "routes"} <= set(progress[-1])
        assert "_file_only" not in progress[-1]
        assert "job.progress" not in capsys.readouterr().err
