"""Every answer kept whole, through the real aioboto3 client against the emulator: tool_use and thinking
blocks in ``content`` / ``tool_input``, a 200 that is not a Messages response, ids that keep their type,
and kept columns taken from the current input."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from runner.cli import main
from runner.emulator import EmulatorThread
from runner.exit_codes import EXIT_OK, EXIT_ROWS_FAILED
from runner.job import run_job
from tests.helpers import (
    GLOBAL_HAIKU,
    US_HAIKU,
    ids_for,
    invoke_calls,
    make_spec,
    outcomes_of,
    prompts_for,
    read_results,
    spec_data,
    write_prompts,
    write_spec,
    write_table,
)

SONNET_45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"
CLASSIFY = {
    "name": "classify",
    "description": "Record the sentiment of the review.",
    "input_schema": {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["positive", "negative", "mixed"]},
            "confidence": {"type": "number"},
            "topics": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["label"],
    },
}


class TestContent:
    def test_a_forced_tool_keeps_its_input(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """With tools and a forced tool_choice in [request] extra, every row keeps its tool_use block in
        `content` and its input in `tool_input`, whose `label` is one the schema allows."""
        source = write_prompts(tmp_path / "in.parquet", 20)
        extra = {"tools": [CLASSIFY], "tool_choice": {"type": "tool", "name": "classify"}}
        spec = make_spec(
            tmp_path,
            spec_data(source, tmp_path / "out", emu.url, request={"max_tokens": 256, "extra": extra}),
        )
        assert run_job(spec, handle_signals=False, progress=False).exit_code == EXIT_OK
        rows = read_results(tmp_path / "out").to_pylist()
        for row in rows:
            assert row["stop_reason"] == "tool_use"
            assert row["completion"] == ""
            (block,) = json.loads(row["content"])
            assert (block["type"], block["name"]) == ("tool_use", "classify")
            tool_input = json.loads(row["tool_input"])
            assert tool_input == block["input"]
            assert tool_input["label"] in ("positive", "negative", "mixed")
            assert isinstance(tool_input["confidence"], float)
            assert isinstance(tool_input["topics"], list)
        assert len({json.loads(r["tool_input"])["label"] for r in rows}) > 1  # chosen by the prompt

    def test_thinking_blocks_are_kept(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """With thinking enabled, `content` holds the thinking block (and its signature) before the
        text, and `completion` is the text alone."""
        source = write_prompts(tmp_path / "in.parquet", 5)
        data = spec_data(
            source,
            tmp_path / "out",
            emu.url,
            request={"max_tokens": 2048, "extra": {"thinking": {"type": "enabled", "budget_tokens": 1024}}},
        )
        assert run_job(make_spec(tmp_path, data), handle_signals=False, progress=False).exit_code == EXIT_OK
        for row in read_results(tmp_path / "out").to_pylist():
            thinking, text = json.loads(row["content"])
            assert thinking["type"] == "thinking" and thinking["signature"]
            assert text == {"type": "text", "text": row["completion"]}
            assert row["tool_input"] is None

    def test_plain_answers_have_content_too(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """A text answer's `content` is its one text block; error rows have none."""
        source = write_table(tmp_path / "in.parquet", {"id": ["a", "b"], "prompt": ["Say hi.", None]})
        run_job(
            make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url)),
            handle_signals=False,
            progress=False,
        )
        ok, bad = read_results(tmp_path / "out").to_pylist()
        assert json.loads(ok["content"]) == [{"type": "text", "text": ok["completion"]}]
        assert bad["content"] is None and bad["tool_input"] is None


class TestNotAMessagesResponse:
    def test_fifty_rows_end_as_error_rows_within_seconds(
        self, emu: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Every call answered 200 with `{}`: 50 rows end as MalformedResponseError rows in seconds, two
        attempts each, no breaker opened, exit 1."""
        for profile in (GLOBAL_HAIKU, US_HAIKU):
            emu.script(profile, "*", ["not_messages"] * 100)
        source = write_prompts(tmp_path / "in.parquet", 50)
        data = spec_data(
            source, tmp_path / "out", emu.url, retry={"backoff_initial_s": 0.5, "backoff_max_s": 30.0}
        )
        spec_path = write_spec(tmp_path / "job.toml", data)
        started = time.monotonic()
        assert main(["run", str(spec_path), "--no-progress"]) == EXIT_ROWS_FAILED
        assert time.monotonic() - started < 15
        rows = read_results(tmp_path / "out").to_pylist()
        assert len(rows) == 50
        assert {r["error_type"] for r in rows} == {"MalformedResponseError"}
        assert all("not a Messages response" in r["error_message"] for r in rows)
        assert {r["attempts"] for r in rows} == {2}
        counters = emu.counters()
        assert invoke_calls(counters) == 100
        assert counters["billed_requests"] == 0
        events = (tmp_path / "out" / "_job" / "events.jsonl").read_text()
        assert "route.breaker_opened" not in events

    def test_a_cut_off_body_is_still_retried(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """A body cut off mid-way is retried as before, and the row succeeds."""
        emu.script(GLOBAL_HAIKU, "*", ["cut_off", "cut_off"])
        source = write_prompts(tmp_path / "in.parquet", 1)
        spec = make_spec(
            tmp_path, spec_data(source, tmp_path / "out", emu.url, model={"endpoints": ["global"]})
        )
        assert run_job(spec, handle_signals=False, progress=False).exit_code == EXIT_OK
        (row,) = read_results(tmp_path / "out").to_pylist()
        assert row["attempts"] == 3
        assert outcomes_of(emu.counters(), GLOBAL_HAIKU)["cut_off"] == 2


class TestIds:
    def test_an_integer_id_comes_back_an_integer(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """An int64 `review_id` comes back as an int64 `id` that joins back to the input, and a rerun
        sends nothing again."""
        ids = pa.array([1_000_000_000_001 + i for i in range(30)], pa.int64())
        source = write_table(tmp_path / "in.parquet", {"review_id": ids, "prompt": prompts_for(ids_for(30))})
        data = spec_data(source, tmp_path / "out", emu.url, columns={"id": "review_id"})
        assert run_job(make_spec(tmp_path, data), handle_signals=False, progress=False).exit_code == EXIT_OK
        results = read_results(tmp_path / "out")
        assert results.schema.field("id").type == pa.int64()
        assert results.column("id").to_pylist() == ids.to_pylist()
        joined = results.join(pa.table({"review_id": ids}), keys="id", right_keys="review_id")
        assert joined.num_rows == 30
        billed = emu.counters()["billed_requests"]
        assert run_job(make_spec(tmp_path, data), handle_signals=False, progress=False).exit_code == EXIT_OK
        assert emu.counters()["billed_requests"] == billed


class TestKeptColumns:
    def test_kept_columns_are_current(
        self, emu: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A changed `team` is in results.parquet and `stats --by team` after a rerun that sends
        nothing (the rows did not change)."""
        path = tmp_path / "in.parquet"
        write_prompts(path, 12, team=["a"] * 12)
        data = spec_data(path, tmp_path / "out", emu.url, columns={"keep": ["team"]})
        assert run_job(make_spec(tmp_path, data), handle_signals=False, progress=False).exit_code == EXIT_OK
        write_prompts(path, 12, team=["b"] * 6 + ["c"] * 6)  # same ids and prompts, new teams
        billed = emu.counters()["billed_requests"]
        assert run_job(make_spec(tmp_path, data), handle_signals=False, progress=False).exit_code == EXIT_OK
        assert emu.counters()["billed_requests"] == billed
        assert read_results(tmp_path / "out").column("team").to_pylist() == ["b"] * 6 + ["c"] * 6
        capsys.readouterr()
        assert main(["stats", str(tmp_path / "out"), "--json", "--by", "team"]) == EXIT_OK
        stats: dict[str, Any] = json.loads(capsys.readouterr().out)
        assert {k: v["rows"] for k, v in stats["groups"].items()} == {"b": 6, "c": 6}
