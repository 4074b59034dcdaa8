"""The AWS CLI's habits: ``run``, ``models`` and ``status`` take ``--region`` and ``--profile``; an
unknown profile is one line and exit 2, never a traceback; a home region outside the residency
geography is a warning naming both regions, never a silent switch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from runner.cli import main
from runner.emulator import EmulatorThread
from runner.exit_codes import EXIT_OK, EXIT_SPEC_INVALID
from runner.job import run_job
from tests.helpers import EU_HAIKU, make_spec, read_results, run_cli, spec_data, write_prompts, write_spec

CONFIG = "[profile dev]\nregion = eu-west-1\n"


@pytest.fixture(name="aws_config")
def fixture_aws_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An AWS config file with one profile, `dev` (region eu-west-1)."""
    path = tmp_path / "aws-config"
    path.write_text(CONFIG, encoding="utf-8")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(path))
    return path


@pytest.fixture(name="job")
def fixture_job(emu: EmulatorThread, tmp_path: Path) -> Path:
    """A finished 5-row job whose spec names no region."""
    source = write_prompts(tmp_path / "in.parquet", 5)
    run_job(
        make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url)),
        handle_signals=False,
        progress=False,
    )
    return tmp_path / "out"


class TestUnknownProfile:
    @pytest.mark.parametrize("command", ["run", "models", "status"])
    def test_one_line_and_exit_2(
        self,
        emu: EmulatorThread,
        tmp_path: Path,
        aws_config: Path,
        job: Path,
        command: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """AWS_PROFILE naming no profile: exit 2, one `error:` line naming it, no traceback."""
        spec = write_spec(tmp_path / "job.toml", spec_data(tmp_path / "in.parquet", job, emu.url))
        args = {"run": [str(spec)], "models": ["--endpoint-url", emu.url], "status": [str(job)]}[command]
        monkeypatch.setenv("AWS_PROFILE", "nope")
        done = run_cli([command, *args], cwd=tmp_path)
        assert done.returncode == EXIT_SPEC_INVALID
        lines = done.stderr.strip().splitlines()
        assert lines == [lines[0]]
        assert lines[0].startswith("error: AWS profile 'nope' (from AWS_PROFILE) is in neither ")
        assert str(aws_config) in lines[0]

    def test_profile_flag(self, emu: EmulatorThread, aws_config: Path, tmp_path: Path) -> None:
        """--profile NAME is checked the same way, and named as where it came from."""
        done = run_cli(["models", "--profile", "other", "--endpoint-url", emu.url], cwd=tmp_path)
        assert done.returncode == EXIT_SPEC_INVALID
        assert "'other' (from --profile)" in done.stderr
        assert "Traceback" not in done.stderr


class TestRegionAndProfileFlags:
    def test_run_takes_region_and_profile(
        self, monkeypatch: pytest.MonkeyPatch, aws_config: Path, tmp_path: Path
    ) -> None:
        """`run --region R --profile P`: R becomes the spec's home region, P the process's AWS_PROFILE."""
        monkeypatch.setenv("AWS_PROFILE", "default")
        seen: list[Any] = []

        def spy(spec: Any, **kwargs: Any) -> Any:
            seen.append(spec)
            raise SystemExit(0)  # stop here: the parsed spec is what the test looks at

        monkeypatch.setattr("runner.cli.run.run_job", spy)
        spec = write_spec(tmp_path / "job.toml", spec_data(tmp_path / "in.parquet", tmp_path / "out", ""))
        assert main(["run", str(spec), "--region", "eu-central-1", "--profile", "dev"]) == 0
        assert seen[0].model.region == "eu-central-1"
        assert os.environ["AWS_PROFILE"] == "dev"

    def test_the_profile_region_is_the_home_region(
        self, emu: EmulatorThread, monkeypatch: pytest.MonkeyPatch, aws_config: Path, tmp_path: Path
    ) -> None:
        """A spec without a region, under `--profile dev`: the job calls Bedrock from dev's region."""
        monkeypatch.setenv("AWS_PROFILE", "default")
        source = write_prompts(tmp_path / "in.parquet", 3)
        data = spec_data(source, tmp_path / "out", emu.url, model={"endpoints": ["eu"]})
        data["model"].pop("region")
        spec = write_spec(tmp_path / "job.toml", data)
        assert main(["run", str(spec), "--profile", "dev"]) == EXIT_OK
        rows = read_results(tmp_path / "out").to_pylist()
        assert {(r["model_id"], r["region"]) for r in rows} == {(EU_HAIKU, "eu-west-1")}

    def test_models_reads_aws_default_region(
        self, emu: EmulatorThread, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`models` without --region uses AWS_DEFAULT_REGION when AWS_REGION is unset, and says so."""
        monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
        assert main(["models", "--endpoint-url", emu.url, "--json"]) == EXIT_OK
        data = json.loads(capsys.readouterr().out)
        assert (data["region"], data["region_source"]) == ("eu-west-1", "AWS_DEFAULT_REGION")

    def test_status_names_the_region(
        self, job: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`status` names the home region a rerun would use: the job's, or --region."""
        main(["status", str(job), "--json"])
        data = json.loads(capsys.readouterr().out)
        assert (data["region"], data["region_source"]) == ("us-east-1", "the job's [model] region")
        main(["status", str(job), "--json", "--region", "eu-west-1"])
        data = json.loads(capsys.readouterr().out)
        assert (data["region"], data["region_source"]) == ("eu-west-1", "--region")


class TestResidency:
    def test_home_region_outside_residency_is_a_warning(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """Residency eu from us-east-1: the rows go to eu. from an eu region, with a warning naming both."""
        source = write_prompts(tmp_path / "in.parquet", 5)
        data = spec_data(source, tmp_path / "out", emu.url, model={"region": "us-east-1", "residency": "eu"})
        report = run_job(make_spec(tmp_path, data), handle_signals=False, progress=False)
        assert report.exit_code == EXIT_OK
        events = [
            json.loads(line) for line in (tmp_path / "out" / "_job" / "events.jsonl").read_text().splitlines()
        ]
        (warning,) = [e for e in events if e["event"] == "route.region_switched"]
        assert warning["level"] == "warning"
        assert (warning["home_region"], warning["region"]) == ("us-east-1", "eu-central-1")
        assert "us-east-1" in warning["message"] and "eu-central-1" in warning["message"]
        rows = read_results(tmp_path / "out").to_pylist()
        assert {(r["model_id"], r["region"]) for r in rows} == {(EU_HAIKU, "eu-central-1")}
