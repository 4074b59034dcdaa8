"""Bad input and faults (issue 12): what a new user, or a hostile one, can throw at a job.

Each test drives the real engine (``run_job`` or the ``bedrock-batch`` console script) against the
session emulator over loopback; the promise checked is the one the README makes: a clear one-line
error (exit 2 before any paid call), nothing lost, nothing paid for no reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runner.cli import main
from runner.emulator import EmulatorThread
from runner.exit_codes import EXIT_SPEC_INVALID
from tests.helpers import invoke_calls, spec_data, write_prompts, write_spec


class TestRefusedBeforeAnyCall:
    @pytest.mark.parametrize(
        ("sections", "message"),
        [
            (
                {"request": {"max_tokens": 32, "temperature": 5}},
                "[request] `temperature` must be between 0 and 1",
            ),
            ({"request": {"max_tokens": 32, "top_k": -5}}, "[request] `top_k` must not be negative"),
            ({"request": {"max_tokens": 32, "stop_sequences": [""]}}, "`stop_sequences` item 0 is empty"),
            (
                {"request": {"max_tokens": 32, "extra": {"model": "m"}}},
                "`extra` key 'model' is not a body key",
            ),
            (
                {"request": {"max_tokens": 32, "temperature": float("nan")}},
                "must be a finite number, not nan",
            ),
            ({"columns": {"id": "id", "prompt": "prompt", "keep": ["status"]}}, "`keep` has 'status'"),
            ({"model": {"region": "eu-wst-1"}}, "[model] `region` 'eu-wst-1' is not a Bedrock region"),
        ],
        ids=["temperature", "top_k", "stop_sequences", "extra-model", "nan", "keep-status", "region"],
    )
    def test_bad_spec_exits_2_naming_the_key(
        self,
        emu: EmulatorThread,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        sections: dict[str, dict[str, Any]],
        message: str,
    ) -> None:
        """A request parameter Bedrock would refuse in every row: exit 2 naming the key, and no call."""
        source = write_prompts(tmp_path / "in.parquet", 10)
        data = spec_data(source, tmp_path / "out", emu.url)
        for name, values in sections.items():
            data[name].update(values)
        spec = write_spec(tmp_path / "job.toml", data)
        assert main(["run", str(spec)]) == EXIT_SPEC_INVALID
        err = capsys.readouterr().err
        assert message in err
        assert len(err.strip().splitlines()) == 1
        assert invoke_calls(emu.counters()) == 0
        assert not (tmp_path / "out").exists()

    def test_unknown_aws_region_exits_2(
        self,
        emu: EmulatorThread,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A region from AWS_REGION the catalogue does not know is refused too, before any call."""
        source = write_prompts(tmp_path / "in.parquet", 10)
        data = spec_data(source, tmp_path / "out", emu.url)
        data["model"].pop("region")
        spec = write_spec(tmp_path / "job.toml", data)
        monkeypatch.setenv("AWS_REGION", "xx-nowhere-9")
        assert main(["run", str(spec)]) == EXIT_SPEC_INVALID
        assert "region 'xx-nowhere-9' is not a Bedrock region" in capsys.readouterr().err
        assert invoke_calls(emu.counters()) == 0
