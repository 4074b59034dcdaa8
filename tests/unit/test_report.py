"""The HTML report of ``stats --html``: one self-contained file with titled charts and the summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from runner.cli.stats import stats_command
from runner.errors import SinkError
from runner.report import (
    ERRORS_TITLE,
    INSTALL_HINT,
    LATENCY_TITLE,
    ROUTES_TITLE,
    THROUGHPUT_TITLE,
    build_html,
    group_cost_title,
    write_html,
)
from runner.stats import collect

# The job-directory writer lives with the stats tests. pytest puts tests/ on sys.path (no __init__.py),
# so at run time the module is ``test_stats``; mypy, run from the repository root, knows it by path.
if TYPE_CHECKING:
    from tests.unit.test_stats import make_rows, write_job
else:
    from test_stats import make_rows, write_job


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
        """A job with nothing committed yet still gets a report, with notes instead of bars."""
        job = write_job(tmp_path / "job", [], input_rows=5, parts=[])
        text = build_html(collect(job))
        assert "no finished rows yet" in text
        assert "no ok rows yet" in text

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
