"""The HTML report of ``stats --html``: one self-contained file with titled charts and the summary."""

from __future__ import annotations

import datetime as dt
import json
import random
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from runner import atomic
from runner.cli.stats import stats_command
from runner.errors import SinkError
from runner.report import (
    ACTIVITY_TITLE,
    ERRORS_TITLE,
    INSTALL_HINT,
    LATENCY_TITLE,
    ROUTES_TITLE,
    THROUGHPUT_TITLE,
    build_html,
    group_cost_title,
    progress_samples,
    write_html,
)
from runner.stats import collect

# The job-directory writer lives with the stats tests. pytest puts tests/ on sys.path (no __init__.py),
# so at run time the module is ``test_stats``; mypy, run from the repository root, knows it by path.
if TYPE_CHECKING:
    from tests.unit.test_stats import make_row, make_rows, write_job
else:
    from test_stats import make_row, make_rows, write_job


@pytest.fixture(name="job")
def fixture_job(tmp_path: Path) -> Path:
    return write_job(tmp_path / "job", make_rows(300))


class TestReport:
    def test_written_with_titled_charts(self, tmp_path: Path, job: Path) -> None:
        """The report names every chart, shows the summary and inlines plotly.js (opens offline)."""
        out = write_html(tmp_path / "reports" / "job.html", collect(job, by="team"))
        text = out.read_text(encoding="utf-8")
        for title in (THROUGHPUT_TITLE, LATENCY_TITLE, ROUTES_TITLE, ERRORS_TITLE, group_cost_title("team")):
            assert f"<h2>{title}</h2>" in text
            assert f'"title":{{"text":"{title}"' in text  # and in the figure's own layout
        assert "bedrock-on-demand-2025-11" in text
        assert "us-west-2" in text
        assert "<script src=" not in text  # nothing fetched from a CDN
        assert "plotly.js v" in text or "Plotly" in text
        assert len(text) > 1_000_000

    def test_private_like_the_results(self, tmp_path: Path, job: Path, umask_022: None) -> None:
        """The report holds what results.parquet holds, so it is written 0600 like it (umask 022)."""
        out = write_html(tmp_path / "job.html", collect(job))
        assert out.stat().st_mode & 0o777 == 0o600

    def test_size_does_not_grow_with_rows(self, tmp_path: Path) -> None:
        """Charts are drawn from aggregates: ten times the rows, about the same report."""
        small = write_job(tmp_path / "small", make_rows(200))
        large = write_job(tmp_path / "large", make_rows(2000))
        sizes = []
        for job in (small, large):
            sizes.append(len(build_html(collect(job))))
        assert sizes[1] < sizes[0] * 1.05

    def test_empty_job(self, tmp_path: Path) -> None:
        """A job with nothing committed yet still gets a report: the summary, no empty chart."""
        job = write_job(tmp_path / "job", [], input_rows=5, parts=[])
        text = build_html(collect(job))
        assert "<h2>Summary</h2>" in text
        assert "No charts yet" in text
        for title in (THROUGHPUT_TITLE, LATENCY_TITLE, ROUTES_TITLE, ERRORS_TITLE, ACTIVITY_TITLE):
            assert f"<h2>{title}</h2>" not in text

    def test_empty_charts_are_left_out(self, tmp_path: Path) -> None:
        """A job without failed rows has no errors chart (rather than an empty one)."""
        job = write_job(tmp_path / "job", [make_row(i, random.Random(i), status="ok") for i in range(20)])
        text = build_html(collect(job))
        assert f"<h2>{THROUGHPUT_TITLE}</h2>" in text
        assert f"<h2>{ERRORS_TITLE}</h2>" not in text
        assert "no failed rows" not in text

    def test_file_is_created_like_the_other_outputs(self, tmp_path: Path, job: Path) -> None:
        """The report holds what results.parquet holds, so it is written as privately (0600)."""
        out = write_html(tmp_path / "job.html", collect(job))
        other = tmp_path / "other.json"
        atomic.write_text(other, "{}")
        assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE(other.stat().st_mode) == 0o600

    def test_throttles_and_in_flight_over_time(self, tmp_path: Path, job: Path) -> None:
        """The runs' job.progress events become a chart of requests in flight and throttles per minute."""
        write_events(
            job,
            [
                (0, "job.started", {}),
                (10, "job.progress", progress(8, 30)),
                (20, "job.progress", progress(6, 40)),
            ],
        )
        out = write_html(tmp_path / "job.html", collect(job))
        text = out.read_text(encoding="utf-8")
        assert f"<h2>{ACTIVITY_TITLE}</h2>" in text
        assert "throttled attempts" in text and "in flight us@us-east-1" in text


def progress(in_flight: int, throttles: int) -> dict[str, Any]:
    """The figures of a job.progress event that matter to the chart, two routes."""
    routes = {"global@us-east-1": {"in_flight": in_flight - 1}, "us@us-east-1": {"in_flight": 1}}
    return {"in_flight": in_flight, "throttles": throttles, "routes": routes}


def write_events(job: Path, events: list[tuple[float, str, dict[str, Any]]]) -> None:
    """Lines of ``_job/events.jsonl``: (seconds after T0, event name, fields)."""
    path = job / "_job" / "events.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
    with path.open("a", encoding="utf-8") as fh:
        for seconds, name, fields in events:
            at = (t0 + dt.timedelta(seconds=seconds)).isoformat()
            fh.write(json.dumps({"event": name, "timestamp": at, "level": "info", **fields}) + "\n")


class TestProgressSamples:
    def test_throttles_per_minute_per_run(self, tmp_path: Path) -> None:
        """Throttles (counted per run) become a rate between samples; a second run starts from zero."""
        write_events(
            tmp_path,
            [
                (0, "job.started", {}),
                (10, "job.progress", progress(8, 30)),
                (20, "job.progress", progress(6, 40)),
                (25, "route.removed", {}),
                (100, "job.started", {}),
                (130, "job.progress", progress(2, 5)),
            ],
        )
        with (tmp_path / "_job" / "events.jsonl").open("a", encoding="utf-8") as fh:
            fh.write('{"event": "job.progress", "timest')  # a line torn by a kill
        samples = progress_samples(tmp_path)
        assert [s.run for s in samples] == [0, 0, 1]
        assert [round(s.throttles_per_min) for s in samples] == [180, 60, 10]
        assert [s.in_flight for s in samples] == [8, 6, 2]
        assert samples[0].routes_in_flight == {"global@us-east-1": 7, "us@us-east-1": 1}

    def test_no_events_file(self, tmp_path: Path) -> None:
        """A job directory without events (written by another tool) has no samples, and no chart."""
        assert progress_samples(tmp_path) == []

    def test_without_plotly(self, monkeypatch: pytest.MonkeyPatch, job: Path) -> None:
        """Without the report extra, a clear error says what to install."""
        monkeypatch.setitem(sys.modules, "plotly", None)
        monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
        collected = collect(job)
        with pytest.raises(SinkError, match=r"pip install 'bedrock-batch\[report\]'"):
            build_html(collected)
        assert "bedrock-batch[report]" in INSTALL_HINT

    def test_cli_html_with_json(self, tmp_path: Path, job: Path) -> None:
        """stats --json --html writes the report and keeps stdout pure JSON."""
        out = tmp_path / "r.html"
        result = CliRunner().invoke(stats_command, [str(job), "--json", "--html", str(out)])
        assert result.exit_code == 0, result.output
        assert result.stdout.lstrip().startswith("{")
        assert f"report written to {out}" in result.stderr
        assert ROUTES_TITLE in out.read_text(encoding="utf-8")
