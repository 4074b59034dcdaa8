"""``bedrock-batch run``: flags reach ``run_job``, exit codes follow DESIGN.md, and everything wrong with
the spec or the input stops the run with exit 2 before the first request.

The parsing tests replace ``runner.cli.run.run_job`` (the seam the command calls) to see what it was
given; everything else runs the real command in-process against the session emulator, whose counters
prove that nothing was sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runner.cli import main
from runner.emulator import EmulatorThread
from runner.errors import PreflightError
from runner.exit_codes import EXIT_INTERRUPTED, EXIT_OK, EXIT_ROWS_FAILED, EXIT_SPEC_INVALID
from runner.job import JobReport
from runner.pool import Counters
from runner.spec import JobSpec
from runner.state import Progress
from tests.helpers import (
    HAIKU,
    ids_for,
    read_results,
    spec_data,
    to_toml,
    write_prompts,
    write_spec,
    write_table,
)


class RunJobSpy:
    """Stands in for ``run_job``: records the spec and keywords, answers a report with ``exit_code``."""

    def __init__(self, exit_code: int = EXIT_OK, raises: Exception | None = None) -> None:
        self.exit_code = exit_code
        self.raises = raises
        self.calls: list[tuple[JobSpec, dict[str, Any]]] = []

    def __call__(self, spec: JobSpec, **kwargs: Any) -> JobReport:
        self.calls.append((spec, kwargs))
        if self.raises is not None:
            raise self.raises
        progress = Progress(rows=3, ok=3, failed=0, failed_retryable=0, running=False)
        return JobReport(
            exit_code=self.exit_code,
            output=Path(spec.job.output),
            progress=progress,
            stopped=None,
            elapsed_s=0.1,
            counters=Counters(),
        )

    @property
    def only(self) -> tuple[JobSpec, dict[str, Any]]:
        assert len(self.calls) == 1
        return self.calls[0]


@pytest.fixture(name="spy")
def fixture_spy(monkeypatch: pytest.MonkeyPatch) -> RunJobSpy:
    spy = RunJobSpy()
    monkeypatch.setattr("runner.cli.run.run_job", spy)
    return spy


@pytest.fixture(name="spec_file")
def fixture_spec_file(tmp_path: Path) -> Path:
    """A valid spec over a 3-row input, with no endpoint (the flags give one when needed)."""
    source = write_prompts(tmp_path / "in.parquet", 3)
    data = spec_data(source, tmp_path / "out", "")
    data["model"].pop("endpoint_url")
    return write_spec(tmp_path / "job.toml", data)


class TestArguments:
    def test_defaults(self, spy: RunJobSpy, spec_file: Path) -> None:
        """Without flags, run_job gets the spec as written and the documented defaults."""
        assert main(["run", str(spec_file)]) == EXIT_OK
        spec, kwargs = spy.only
        assert spec.model.id == HAIKU
        assert spec.model.endpoint_url == ""
        assert spec.limits.max_in_flight == 8
        assert kwargs == {
            "limit": None,
            "retry_failed": False,
            "force": False,
            "preflight": None,
            "progress": None,
            "grace_s": 30.0,
            "log_level": "info",
            "emulated": False,
        }

    def test_overrides_land_in_the_spec(self, spy: RunJobSpy, spec_file: Path, tmp_path: Path) -> None:
        """--input, --output, --endpoint-url and --max-in-flight override the spec's keys."""
        args = [
            "run",
            str(spec_file),
            "--input",
            str(tmp_path / "other.parquet"),
            "--output",
            str(tmp_path / "elsewhere"),
            "--endpoint-url",
            "http://127.0.0.1:9",
            "--max-in-flight",
            "3",
        ]
        assert main(args) == EXIT_OK
        spec, _ = spy.only
        assert spec.job.input == str(tmp_path / "other.parquet")
        assert spec.job.output == str(tmp_path / "elsewhere")
        assert spec.model.endpoint_url == "http://127.0.0.1:9"
        assert spec.limits.max_in_flight == 3
        assert spec.model.id == HAIKU  # untouched keys stay

    def test_run_options(self, spy: RunJobSpy, spec_file: Path) -> None:
        """--limit, --retry-failed, --force, --no-preflight, --grace, --progress, --log-level: passed on."""
        args = ["run", str(spec_file), "--limit", "2", "--retry-failed", "--force", "--no-preflight"]
        args += ["--grace", "1.5", "--progress", "--log-level", "debug"]
        assert main(args) == EXIT_OK
        _, kwargs = spy.only
        assert kwargs == {
            "limit": 2,
            "retry_failed": True,
            "force": True,
            "preflight": False,
            "progress": True,
            "grace_s": 1.5,
            "log_level": "debug",
            "emulated": False,
        }

    def test_preflight_flag(self, spy: RunJobSpy, spec_file: Path) -> None:
        """--preflight forces preflight on whatever the spec says."""
        assert main(["run", str(spec_file), "--preflight"]) == EXIT_OK
        assert spy.only[1]["preflight"] is True

    @pytest.mark.parametrize("flag", [["--max-in-flight", "0"], ["--limit", "-1"], ["--log-level", "loud"]])
    def test_bad_flag_values_are_usage_errors(self, spy: RunJobSpy, spec_file: Path, flag: list[str]) -> None:
        """A flag value out of range is a usage error (exit 2) and run_job is never called."""
        assert main(["run", str(spec_file), *flag]) == EXIT_SPEC_INVALID
        assert spy.calls == []


class TestExitCodes:
    @pytest.mark.parametrize("code", [EXIT_OK, EXIT_ROWS_FAILED, EXIT_INTERRUPTED])
    def test_report_code_is_the_exit_code(
        self, monkeypatch: pytest.MonkeyPatch, spec_file: Path, code: int
    ) -> None:
        """The command exits with the code of the job's report (0, 1 or 130)."""
        monkeypatch.setattr("runner.cli.run.run_job", RunJobSpy(exit_code=code))
        assert main(["run", str(spec_file)]) == code

    def test_batch_error_is_exit_2_with_one_line(
        self, monkeypatch: pytest.MonkeyPatch, spec_file: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A job-fatal error from run_job is one ``error:`` line on stderr and exit 2, no traceback."""
        spy = RunJobSpy(raises=PreflightError("no route passed preflight (global@us-east-1: denied)"))
        monkeypatch.setattr("runner.cli.run.run_job", spy)
        assert main(["run", str(spec_file)]) == EXIT_SPEC_INVALID
        err = capsys.readouterr().err
        assert err.strip() == "error: no route passed preflight (global@us-east-1: denied)"

    def test_summary_goes_to_stderr(
        self, spy: RunJobSpy, spec_file: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The end-of-run summary is printed on stderr, naming the results file."""
        assert main(["run", str(spec_file)]) == EXIT_OK
        captured = capsys.readouterr()
        assert "3 rows: 3 ok, 0 failed, 0 pending" in captured.err
        assert "results.parquet" in captured.err


def run_and_expect_2(
    emu: EmulatorThread, tmp_path: Path, spec_path: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> str:
    """Run the real command; assert exit 2, no request at the emulator, no results; return stderr."""
    capsys.readouterr()
    assert main(["run", str(spec_path), "--endpoint-url", emu.url, *extra]) == EXIT_SPEC_INVALID
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert emu.counters()["total_requests"] == 0
    assert not (tmp_path / "out" / "results.parquet").exists()
    return err


class TestBadSpec:
    @pytest.fixture(name="good")
    def fixture_good(self, tmp_path: Path) -> dict[str, Any]:
        source = write_prompts(tmp_path / "in.parquet", 3)
        data = spec_data(source, tmp_path / "out", "")
        data["model"].pop("endpoint_url")
        return data

    def test_unknown_key(
        self, emu: EmulatorThread, tmp_path: Path, good: dict[str, Any], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A misspelt key is named, with its section."""
        good["limits"]["max_in_fligth"] = 4
        err = run_and_expect_2(emu, tmp_path, write_spec(tmp_path / "job.toml", good), capsys)
        assert "[limits] unknown key `max_in_fligth`" in err
        assert "job.toml" in err

    def test_unknown_section(
        self, emu: EmulatorThread, tmp_path: Path, good: dict[str, Any], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An unknown section is named."""
        good["limit"] = {"tpm": 5}
        err = run_and_expect_2(emu, tmp_path, write_spec(tmp_path / "job.toml", good), capsys)
        assert "[limit]" in err

    def test_missing_model_id(
        self, emu: EmulatorThread, tmp_path: Path, good: dict[str, Any], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """No model id: the message names ``[model] `id```."""
        del good["model"]["id"]
        err = run_and_expect_2(emu, tmp_path, write_spec(tmp_path / "job.toml", good), capsys)
        assert "[model] `id` is required" in err

    def test_unknown_model_id(
        self, emu: EmulatorThread, tmp_path: Path, good: dict[str, Any], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A model id the catalogue does not know is named."""
        good["model"]["id"] = "anthropic.claude-nonesuch-v9:0"
        err = run_and_expect_2(emu, tmp_path, write_spec(tmp_path / "job.toml", good), capsys)
        assert "anthropic.claude-nonesuch-v9:0" in err
        assert "[model] `id`" in err

    def test_bad_type(
        self, emu: EmulatorThread, tmp_path: Path, good: dict[str, Any], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A value of the wrong type names the key and the type it needs."""
        good["limits"]["max_in_flight"] = "many"
        err = run_and_expect_2(emu, tmp_path, write_spec(tmp_path / "job.toml", good), capsys)
        assert "[limits] `max_in_flight` must be an integer" in err

    def test_residency_against_a_pinned_global_profile(
        self, emu: EmulatorThread, tmp_path: Path, good: dict[str, Any], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A ``global.`` model id with ``residency`` set is refused before any call."""
        good["model"]["id"] = f"global.{HAIKU}"
        good["model"]["residency"] = "eu"
        err = run_and_expect_2(emu, tmp_path, write_spec(tmp_path / "job.toml", good), capsys)
        assert "residency" in err

    def test_not_toml(self, emu: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A spec that is not TOML names the file."""
        path = tmp_path / "job.toml"
        path.write_text("[job\ninput = ", encoding="utf-8")
        err = run_and_expect_2(emu, tmp_path, path, capsys)
        assert "job.toml: not valid TOML" in err

    def test_missing_spec_file(
        self, emu: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A spec path that does not exist is named."""
        err = run_and_expect_2(emu, tmp_path, tmp_path / "nope.toml", capsys)
        assert "nope.toml" in err


class TestBadInput:
    def spec_for(self, tmp_path: Path, source: Path) -> Path:
        data = spec_data(source, tmp_path / "out", "")
        data["model"].pop("endpoint_url")
        return write_spec(tmp_path / "job.toml", data)

    def test_missing_file(
        self, emu: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An input path that does not exist is named, with the spec key."""
        err = run_and_expect_2(emu, tmp_path, self.spec_for(tmp_path, tmp_path / "absent.parquet"), capsys)
        assert "absent.parquet" in err
        assert "[job] input" in err

    def test_not_parquet(
        self, emu: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A file that is not Parquet is named as such."""
        source = tmp_path / "in.parquet"
        source.write_text("id,prompt\n1,hello\n", encoding="utf-8")
        err = run_and_expect_2(emu, tmp_path, self.spec_for(tmp_path, source), capsys)
        assert "in.parquet: not a Parquet file" in err

    def test_missing_column(
        self, emu: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A column the spec names but the file lacks is named, with the spec key and what the file has."""
        ids = ids_for(3)
        source = write_table(tmp_path / "in.parquet", {"id": ids, "question": ["a", "b", "c"]})
        err = run_and_expect_2(emu, tmp_path, self.spec_for(tmp_path, source), capsys)
        assert "no column 'prompt'" in err
        assert "[columns] `prompt`" in err
        assert "question" in err

    def test_duplicate_ids(
        self, emu: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A repeated id is named with both of its rows."""
        source = write_table(tmp_path / "in.parquet", {"id": ["a", "b", "a"], "prompt": ["x", "y", "z"]})
        err = run_and_expect_2(emu, tmp_path, self.spec_for(tmp_path, source), capsys)
        assert "id 'a'" in err
        assert "row 0" in err and "row 2" in err

    def test_failed_preflight(
        self, emu: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Every route denied at preflight: exit 2, no row billed, and no row marked failed."""
        emu.set_faults({"routes": [{"profile": "*", "access_denied": True}]})
        spec_path = self.spec_for(tmp_path, write_prompts(tmp_path / "in.parquet", 3))
        assert main(["run", str(spec_path), "--endpoint-url", emu.url, "--preflight"]) == EXIT_SPEC_INVALID
        assert "no route passed preflight" in capsys.readouterr().err
        assert emu.counters()["billed_requests"] == 0


class TestEmulate:
    def test_dry_run_without_endpoint_or_credentials(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``run --emulate`` runs the job on a built-in emulator: no endpoint, no credentials, exit 0."""
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        source = write_prompts(tmp_path / "in.parquet", 25)
        data = spec_data(source, tmp_path / "out", "", model={"preflight": True})
        data["model"].pop("endpoint_url")
        spec_path = tmp_path / "job.toml"
        spec_path.write_text(to_toml(data), encoding="utf-8")
        assert main(["run", str(spec_path), "--emulate"]) == EXIT_OK
        assert "dry run: emulator at http://127.0.0.1:" in capsys.readouterr().err
        results = read_results(tmp_path / "out-emulated")
        assert results.column("id").to_pylist() == ids_for(25)
        assert set(results.column("status").to_pylist()) == {"ok"}
        assert set(results.column("lane").to_pylist()) == {"emulated_on_demand"}

    def dry_run_spec(self, tmp_path: Path) -> Path:
        source = write_prompts(tmp_path / "in.parquet", 10)
        data = spec_data(source, tmp_path / "out", "")
        data["model"].pop("endpoint_url")
        return write_spec(tmp_path / "job.toml", data)

    def test_a_dry_run_never_shares_the_real_directory(
        self, emu: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A dry run writes beside the job directory; the real run then sends every row, none of the
        invented answers are kept."""
        spec_path = self.dry_run_spec(tmp_path)
        assert main(["run", str(spec_path), "--emulate"]) == EXIT_OK
        assert "results in " + str(tmp_path / "out-emulated") in capsys.readouterr().err
        assert not (tmp_path / "out").exists()
        assert main(["run", str(spec_path), "--endpoint-url", emu.url]) == EXIT_OK
        assert emu.counters()["billed_requests"] == 10
        assert set(read_results(tmp_path / "out").column("lane").to_pylist()) == {"on_demand"}

    def test_a_real_run_refuses_a_dry_runs_directory(
        self, emu: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Pointed at a dry run's directory, a real run stops with exit 2 before any call."""
        spec_path = self.dry_run_spec(tmp_path)
        assert main(["run", str(spec_path), "--emulate"]) == EXIT_OK
        capsys.readouterr()
        code = main(
            ["run", str(spec_path), "--endpoint-url", emu.url, "--output", str(tmp_path / "out-emulated")]
        )
        assert code == EXIT_SPEC_INVALID
        assert "dry run" in capsys.readouterr().err
        assert emu.counters()["total_requests"] == 0

    def test_a_dry_run_refuses_a_real_directory(
        self, emu: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--emulate --output pointing at a real job's directory is refused with exit 2."""
        spec_path = self.dry_run_spec(tmp_path)
        assert main(["run", str(spec_path), "--endpoint-url", emu.url]) == EXIT_OK
        capsys.readouterr()
        assert (
            main(["run", str(spec_path), "--emulate", "--output", str(tmp_path / "out")]) == EXIT_SPEC_INVALID
        )
        assert "real job" in capsys.readouterr().err
        assert set(read_results(tmp_path / "out").column("lane").to_pylist()) == {"on_demand"}

    def test_status_names_a_dry_run(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """status --json says the directory holds a dry run."""
        assert main(["run", str(self.dry_run_spec(tmp_path)), "--emulate"]) == EXIT_OK
        capsys.readouterr()
        assert main(["status", str(tmp_path / "out-emulated"), "--json"]) == EXIT_OK
        assert '"emulated": true' in capsys.readouterr().out
