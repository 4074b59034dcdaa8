"""Small conventions across the commands: ``status`` exit codes, one meaning of ``complete``, a
``version`` in every JSON object, and the HTML report of a real run (its activity chart, its mode).
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

import runner
from runner.cli import main
from runner.emulator import EmulatorThread
from runner.exit_codes import EXIT_OK, EXIT_ROWS_FAILED, EXIT_SPEC_INVALID
from runner.job import run_job
from runner.report import ACTIVITY_TITLE
from tests.helpers import GLOBAL_HAIKU, ids_for, make_spec, spec_data, write_prompts, write_spec, write_table


def json_of(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """Run the command in-process; its exit code and the JSON object it printed."""
    capsys.readouterr()
    code = main(list(argv))
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return code, data


@pytest.fixture(name="ok_job")
def fixture_ok_job(emu: EmulatorThread, tmp_path: Path) -> Path:
    source = write_prompts(tmp_path / "in.parquet", 10)
    run_job(
        make_spec(tmp_path, spec_data(source, tmp_path / "ok", emu.url)), handle_signals=False, progress=False
    )
    return tmp_path / "ok"


@pytest.fixture(name="failed_job")
def fixture_failed_job(emu: EmulatorThread, tmp_path: Path) -> Path:
    """Ten rows, one of them a null prompt (an error row)."""
    ids = ids_for(10)
    prompts: list[str | None] = [f"line {i}" for i in ids]
    prompts[3] = None
    source = write_table(tmp_path / "failed.parquet", {"id": ids, "prompt": prompts})
    spec = make_spec(tmp_path, spec_data(source, tmp_path / "failed", emu.url), "failed.toml")
    assert run_job(spec, handle_signals=False, progress=False).exit_code == EXIT_ROWS_FAILED
    return tmp_path / "failed"


@pytest.fixture(name="pending_job")
def fixture_pending_job(emu: EmulatorThread, tmp_path: Path) -> Path:
    """Ten rows, four of them run (``--limit 4``): six pending."""
    source = write_prompts(tmp_path / "pending.parquet", 10)
    spec = make_spec(tmp_path, spec_data(source, tmp_path / "pending", emu.url), "pending.toml")
    run_job(spec, limit=4, handle_signals=False, progress=False)
    return tmp_path / "pending"


class TestStatus:
    def test_exit_codes(
        self, ok_job: Path, failed_job: Path, pending_job: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`status` exits 0 when the job is complete with every row ok, 1 when rows failed or are pending."""
        assert main(["status", str(ok_job)]) == EXIT_OK
        assert main(["status", str(failed_job)]) == EXIT_ROWS_FAILED
        assert main(["status", str(pending_job)]) == EXIT_ROWS_FAILED
        assert main(["status", str(ok_job.parent / "nothing-here")]) == EXIT_SPEC_INVALID

    def test_complete_means_the_same_in_status_and_stats(
        self, failed_job: Path, pending_job: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`complete` means "every row has an outcome" in both: true with a failed row, false with pending."""
        for job, complete in ((failed_job, True), (pending_job, False)):
            _, status = json_of(capsys, "status", str(job), "--json")
            _, stats = json_of(capsys, "stats", str(job), "--json")
            assert status["complete"] is stats["complete"] is complete, job.name


class TestVersion:
    def test_every_json_object_has_the_version(
        self, ok_job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`stats --json`, `status --json` and `run --estimate --json` carry bedrock-batch's version."""
        _, stats = json_of(capsys, "stats", str(ok_job), "--json")
        _, status = json_of(capsys, "status", str(ok_job), "--json")
        source = write_prompts(tmp_path / "estimate.parquet", 5)
        spec = write_spec(tmp_path / "estimate.toml", spec_data(source, tmp_path / "estimate", ""))
        code, estimate = json_of(capsys, "run", str(spec), "--estimate", "--json")
        assert code == EXIT_OK
        assert stats["version"] == status["version"] == estimate["version"] == runner.__version__
        assert estimate["rows"] == 5 and estimate["rows_to_send"] == 5
        assert estimate["cost_high_usd"] >= estimate["cost_low_usd"] > 0

    def test_json_without_estimate_is_a_usage_error(self, tmp_path: Path) -> None:
        """`run --json` alone is refused (exit 2): a run's output is its summary and results file."""
        spec = write_spec(tmp_path / "job.toml", spec_data(tmp_path / "in.parquet", tmp_path / "out", ""))
        assert main(["run", str(spec), "--json"]) == EXIT_SPEC_INVALID


class TestReport:
    def test_report_of_a_throttled_run(
        self, emu: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A run that met throttles: `stats --html` draws throttles and in-flight over time, from the
        run's own progress events, into a file as private as results.parquet (0600)."""
        emu.script(GLOBAL_HAIKU, "*", ["ThrottlingException"] * 2)
        source = write_prompts(tmp_path / "in.parquet", 40)
        report = run_job(
            make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url)),
            handle_signals=False,
            progress=False,
        )
        assert report.counters.throttles == 2
        html = tmp_path / "report.html"
        assert main(["stats", str(tmp_path / "out"), "--html", str(html)]) == EXIT_OK
        text = html.read_text(encoding="utf-8")
        assert f"<h2>{ACTIVITY_TITLE}</h2>" in text
        assert "<h2>Errors by type</h2>" not in text  # no failed row: no empty chart
        assert stat.S_IMODE(html.stat().st_mode) == 0o600  # private, like everything in the job
        results = tmp_path / "out" / "results.parquet"
        assert stat.S_IMODE(html.stat().st_mode) == stat.S_IMODE(results.stat().st_mode)
