"""The row mapping: one table of (column, ``Result`` attribute) drives journal, parts and schema."""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa

from runner.schemas import INDEX, RESULT_COLUMNS
from runner.sink import JOURNAL_EXTRA, JOURNAL_LAYOUT, _decode, _encode, part_schema, results_table
from runner.types import Result, Usage

FULL = Result(
    index=7, id="r7", key=123, status="error", completion="text", stop_reason="end_turn",
    content='[{"type":"text","text":"text"}]', tool_input='{"label":"é"}',
    usage=Usage(1, 2, 3, 4), model_id="global.m", region="us-east-1", attempts=3, latency_ms=12.5,
    error_type="ThrottledError", error_message="slow down", request_id="req", retryable=True,
    cost_usd=0.25, started_at=1_700_000_000.5, finished_at=1_700_000_001.0, lane="batch",
    keep={"team": "a"},
)  # fmt: skip


class TestRowMapping:
    def test_every_result_field_has_a_column(self) -> None:
        """Each ``Result`` field but ``keep`` is held by one column of the table."""
        attrs = {c.attr.split(".")[0] for c in (*RESULT_COLUMNS, INDEX) if c.attr}
        fields = {f.name for f in dataclasses.fields(Result)} - {"keep"}
        assert attrs == fields

    def test_the_journal_layout_names_every_column(self) -> None:
        """A journal line carries every result column and the input position, each once."""
        layout = [*JOURNAL_LAYOUT, *JOURNAL_EXTRA]
        assert sorted(layout) == sorted([c.name for c in RESULT_COLUMNS] + [INDEX.name])

    def test_a_journal_line_of_the_older_layout_still_reads(self) -> None:
        """A line written before content and tool_input existed (it ends with the kept values) decodes,
        with both null."""
        line = _encode(FULL, "prices-v1", ["team"])
        older = json.dumps(json.loads(line)[: len(JOURNAL_LAYOUT) + 1]).encode()
        result, _ = _decode(older, ["team"])
        assert result == dataclasses.replace(FULL, content=None, tool_input=None)

    def test_an_integer_id_keeps_its_type(self) -> None:
        """With an integer id column, the journal and the part keep the id an integer (an older journal's
        text id is read back as the number)."""
        schema = part_schema([pa.field("team", pa.string())], pa.int64())
        numeric = dataclasses.replace(FULL, id=7)
        result, _ = _decode(_encode(numeric, "p", ["team"]), ["team"])
        assert result.id == 7
        table = results_table([numeric, dataclasses.replace(FULL, id="8")], schema, ["p", "p"])
        assert table.schema.field("id").type == pa.int64()
        assert table.column("id").to_pylist() == [7, 8]

    def test_a_result_survives_the_journal(self) -> None:
        """Decoding a journal line gives back the very result and the price table it was written with."""
        assert _decode(_encode(FULL, "prices-v1", ["team"]), ["team"]) == (FULL, "prices-v1")

    def test_a_part_row_holds_every_field(self) -> None:
        """A part row has each field under its column name, timestamps as UTC times."""
        schema = part_schema([pa.field("team", pa.string())])
        (row,) = results_table([FULL], schema, ["prices-v1"]).to_pylist()
        assert (row["_index"], row["request_key"], row["cache_read_input_tokens"]) == (7, 123, 4)
        assert (row["price_table"], row["team"], row["lane"]) == ("prices-v1", "a", "batch")
        assert row["started_at"].timestamp() == 1_700_000_000.5
