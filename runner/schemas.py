"""The output contract: the result columns, their Arrow types, and which ``Result`` field each one holds.

:data:`RESULT_COLUMNS` is the one table of the row mapping: the part and results schema, the part
writer, the journal and its recovery are all driven by it (``runner.sink``). ``make schemas`` writes
the contracts as files (``runner.contracts``, not imported at run time); a test keeps them equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True, slots=True)
class Column:
    """One result column: its Arrow field and the ``Result`` attribute it holds (a dotted path for a
    token count, ``None`` for ``price_table``, which the sink knows, not the row)."""

    field: pa.Field
    attr: str | None

    @property
    def name(self) -> str:
        return str(self.field.name)


def _c(name: str, type_: pa.DataType, attr: str | None, *, nullable: bool = True) -> Column:
    return Column(pa.field(name, type_, nullable=nullable), attr)


_TS = pa.timestamp("ms", tz="UTC")

RESULT_COLUMNS: tuple[Column, ...] = (
    _c("id", pa.string(), "id", nullable=False),  # or the input id column's integer type
    _c("status", pa.string(), "status", nullable=False),  # "ok" | "error"
    _c("completion", pa.string(), "completion"),  # the text blocks of the answer, joined
    _c("content", pa.string(), "content"),  # every content block of the answer, JSON text, verbatim
    _c("tool_input", pa.string(), "tool_input"),  # the first tool_use block's input, JSON text
    _c("stop_reason", pa.string(), "stop_reason"),
    _c("input_tokens", pa.int64(), "usage.input_tokens", nullable=False),
    _c("output_tokens", pa.int64(), "usage.output_tokens", nullable=False),
    _c("cache_creation_input_tokens", pa.int64(), "usage.cache_creation_input_tokens", nullable=False),
    _c("cache_read_input_tokens", pa.int64(), "usage.cache_read_input_tokens", nullable=False),
    _c("model_id", pa.string(), "model_id"),  # the inference profile that served the row
    _c("region", pa.string(), "region"),
    _c("attempts", pa.int32(), "attempts", nullable=False),
    _c("latency_ms", pa.float64(), "latency_ms"),
    _c("error_type", pa.string(), "error_type"),
    _c("error_message", pa.string(), "error_message"),
    _c("request_id", pa.string(), "request_id"),  # x-amzn-requestid, for support cases
    _c("cost_usd", pa.float64(), "cost_usd", nullable=False),
    _c("price_table", pa.string(), None),  # which price table priced cost_usd
    _c("lane", pa.string(), "lane", nullable=False),  # "on_demand" | "batch"
    _c("started_at", _TS, "started_at"),  # epoch seconds in the Result; 0 is "never" (null)
    _c("finished_at", _TS, "finished_at"),
    _c("retryable", pa.bool_(), "retryable", nullable=False),  # error rows: would a rerun retry it?
    _c("request_key", pa.int64(), "key", nullable=False),  # resume key: hash of row id + request
)
"""Columns every results.parquet has, in this order; the spec's kept input columns follow them."""

INDEX_COLUMN = "_index"
"""Input position of the row; part files carry it, ``results.parquet`` is ordered by it."""

INDEX = Column(pa.field(INDEX_COLUMN, pa.int64(), nullable=False), "index")

RESULT_SCHEMA = pa.schema([c.field for c in RESULT_COLUMNS])
