"""Where results go: a write-ahead journal line per result, and Parquet part files committed atomically.

Every result is appended to the current journal with one ``write(2)`` the moment it arrives, so a
hard kill loses only requests still in flight, never a finished (and paid-for) one. Every
``part_rows`` results or ``part_seconds``, the buffered rows become ``parts/part-NNNNN.parquet``
(temporary file, fsync, rename, fsync of the directory), and only then is the matching journal
deleted. On start, :func:`recover_journals` turns any journal left by a crash into its part.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from operator import attrgetter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from runner.atomic import PRIVATE_FILE_MODE, atomic_write
from runner.errors import SinkError
from runner.schemas import INDEX, RESULT_COLUMNS, RESULT_SCHEMA, Column
from runner.types import EMULATED_LANE_PREFIX, Result, Usage

_UTC = dt.UTC


def part_schema(keep_fields: Sequence[pa.Field], id_type: pa.DataType | None = None) -> pa.Schema:
    """Schema of part files: the result columns, the input position, then the kept input columns.

    ``id_type`` is the type of the input's id column (:meth:`runner.source.Source.id_type`): an
    integer id stays an integer, so results join back to the input without a cast.
    """
    fields = list(RESULT_SCHEMA)
    if id_type is not None and id_type != fields[0].type:
        fields[0] = fields[0].with_type(id_type)
    return pa.schema([*fields, INDEX.field, *keep_fields])


def kept_columns(schema: pa.Schema) -> list[str]:
    """The kept input columns of a part schema: every column the row mapping does not hold."""
    return [name for name in schema.names if name not in _BY_NAME]


def part_name(number: int) -> str:
    return f"part-{number:05d}.parquet"


def journal_name(number: int) -> str:
    return f"journal-{number:05d}.jsonl"


_NUMBERED = re.compile(r"(?:part|journal)-(\d+)\.(?:parquet|jsonl)")


def file_number(path: Path) -> int | None:
    """The ``NNNNN`` of ``part-NNNNN.parquet`` or ``journal-NNNNN.jsonl``; ``None`` for any other name."""
    match = _NUMBERED.fullmatch(path.name)
    return int(match.group(1)) if match else None


# Keep-column values travel through the journal as JSON; these tags bring back what JSON lacks.
def _to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$b64": base64.b64encode(value).decode()}
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1:
            ((tag, raw),) = value.items()
            if tag == "$b64":
                return base64.b64decode(raw)
            if tag == "$datetime":
                return dt.datetime.fromisoformat(raw)
            if tag == "$date":
                return dt.date.fromisoformat(raw)
            if tag == "$decimal":
                return decimal.Decimal(raw)
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


_JOURNAL_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""Made once: ``json.dumps`` with any option builds a new encoder per call (a journal line per row)."""

_BY_NAME: dict[str, Column] = {c.name: c for c in (*RESULT_COLUMNS, INDEX)}
JOURNAL_LAYOUT: tuple[str, ...] = (
    "_index", "id", "request_key", "status", "completion", "stop_reason", "input_tokens",
    "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "model_id", "region",
    "attempts", "latency_ms", "error_type", "error_message", "request_id", "retryable", "cost_usd",
    "price_table", "lane", "started_at", "finished_at",
)  # fmt: skip
"""The columns of a journal line, in its order, then the kept values, then :data:`JOURNAL_EXTRA`: a JSON
array per result. Fixed, so a journal a crash left behind is read by the next version too."""
JOURNAL_EXTRA: tuple[str, ...] = ("content", "tool_input")
"""Columns added after the layout was fixed: they follow the kept values, so a line an older version
wrote (which ends with the kept values) still reads, with these as null."""
_PRICE_AT = JOURNAL_LAYOUT.index("price_table")
_KEEP_AT = len(JOURNAL_LAYOUT)


def _getter(names: Sequence[str]) -> Callable[[Result], tuple[Any, ...]]:
    """One C-level call that reads the ``Result`` attributes of ``names``, as a tuple."""
    attrs = [_BY_NAME[n].attr for n in names]
    assert None not in attrs
    get = attrgetter(*attrs)  # type: ignore[arg-type]
    return get if len(attrs) > 1 else lambda result: (get(result),)


_JOURNAL_HEAD = _getter(JOURNAL_LAYOUT[:_PRICE_AT])
_JOURNAL_TAIL = _getter(JOURNAL_LAYOUT[_PRICE_AT + 1 :])
_JOURNAL_EXTRA = _getter(JOURNAL_EXTRA)


def _encode(result: Result, price_table: str, keep_names: Sequence[str]) -> bytes:
    row = [
        *_JOURNAL_HEAD(result),
        price_table,
        *_JOURNAL_TAIL(result),
        [_to_json(result.keep.get(name)) for name in keep_names],
        *_JOURNAL_EXTRA(result),
    ]
    return (_JOURNAL_ENCODER.encode(row) + "\n").encode()


def _decode(line: bytes, keep_names: Sequence[str]) -> tuple[Result, str]:
    values = json.loads(line)
    fields: dict[str, Any] = {}
    usage: dict[str, Any] = {}
    extra = zip(JOURNAL_EXTRA, values[_KEEP_AT + 1 :], strict=False)
    named = [*zip(JOURNAL_LAYOUT, values, strict=False), *extra]
    for name, value in named:
        attr = _BY_NAME[name].attr
        if attr is None:
            continue
        if attr.startswith("usage."):
            usage[attr.removeprefix("usage.")] = value
        else:
            fields[attr] = value
    keep = dict(zip(keep_names, (_from_json(v) for v in values[_KEEP_AT]), strict=False))
    return Result(**fields, usage=Usage(**usage), keep=keep), values[_PRICE_AT]


def _ts(seconds: float) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(seconds, _UTC) if seconds else None


_TO_PARQUET: dict[str, Callable[[Any], Any]] = {"started_at": _ts, "finished_at": _ts}
"""Columns whose ``Result`` value is converted for Parquet: epoch seconds -> a UTC timestamp."""


def results_table(results: Sequence[Result], schema: pa.Schema, price_tables: Sequence[str]) -> pa.Table:
    """Build a part table from results (column by column: cheaper than row dicts)."""
    cols: dict[str, list[Any]] = {}
    for f in schema:
        column = _BY_NAME.get(f.name)
        if column is None:  # a kept input column
            cols[f.name] = [r.keep.get(f.name) for r in results]
        elif column.attr is None:
            cols[f.name] = list(price_tables)
        else:
            get = attrgetter(column.attr)
            convert = _TO_PARQUET.get(f.name)
            values = [get(r) for r in results]
            if f.name == "id" and pa.types.is_integer(f.type):
                # A journal written before ids kept their type holds their text.
                values = [int(v) if isinstance(v, str) else v for v in values]
            cols[f.name] = values if convert is None else [convert(v) for v in values]
    try:
        return pa.table({f.name: pa.array(cols[f.name], type=f.type) for f in schema}, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SinkError(f"cannot build a results part: {exc}") from exc


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write a Parquet file so that ``path`` is either absent or complete, whatever is killed when."""
    try:
        with atomic_write(path) as fh:
            pq.write_table(table, fh, compression="zstd")
    except OSError as exc:
        raise SinkError(f"cannot write {path}: {exc.strerror or exc}") from exc


class PartSink:
    """Journals each result at once and commits them to part files in batches.

    Not thread-safe: the pool's single writer task owns it. :meth:`take_part` hands the buffered rows
    over for the (threaded) Parquet write, and switches to a fresh journal in the same step.
    """

    def __init__(
        self,
        parts_dir: Path,
        journal_dir: Path,
        *,
        schema: pa.Schema,
        price_table: str,
        next_number: int,
        part_rows: int,
        part_seconds: float,
        emulated: bool = False,
    ) -> None:
        self.parts_dir = parts_dir
        self.lane_prefix = EMULATED_LANE_PREFIX if emulated else ""
        self.journal_dir = journal_dir
        self.schema = schema
        self.price_table = price_table
        self.keep_names = kept_columns(schema)
        self.part_rows = part_rows
        self.part_seconds = part_seconds
        self._number = next_number
        self._rows: list[Result] = []
        self._opened = time.monotonic()
        self._fd = self._open_journal()

    def _open_journal(self) -> int:
        path = self.journal_dir / journal_name(self._number)
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE)
        except OSError as exc:
            raise SinkError(f"cannot open the journal {path}: {exc.strerror}") from exc

    def add(self, result: Result) -> None:
        """Journal one result (one write(2): a kill leaves a whole line or none).

        A dry run's rows (``emulated``) are marked in their ``lane`` (``emulated_on_demand``, ...).
        """
        if self.lane_prefix:
            result = dataclasses.replace(result, lane=self.lane_prefix + result.lane)
        try:
            os.write(self._fd, _encode(result, self.price_table, self.keep_names))
        except OSError as exc:
            raise SinkError(f"cannot append to the journal in {self.journal_dir}: {exc.strerror}") from exc
        self._rows.append(result)

    def due(self) -> bool:
        if not self._rows:
            return False
        return len(self._rows) >= self.part_rows or time.monotonic() - self._opened >= self.part_seconds

    @property
    def buffered(self) -> int:
        return len(self._rows)

    def take_part(self) -> tuple[int, list[Result]]:
        """Detach the buffered rows as part ``number``; later results go to the next journal."""
        number, rows = self._number, self._rows
        os.close(self._fd)
        self._number += 1
        self._rows = []
        self._opened = time.monotonic()
        self._fd = self._open_journal()
        return number, rows

    def commit(self, number: int, rows: Sequence[Result]) -> None:
        """Write part ``number`` atomically, then drop its journal (blocking: run it in a thread)."""
        table = results_table(rows, self.schema, [self.price_table] * len(rows))
        write_parquet(table, self.parts_dir / part_name(number))
        (self.journal_dir / journal_name(number)).unlink(missing_ok=True)

    def close(self) -> None:
        """Close the journal; an empty one is removed so the directory stays tidy."""
        os.close(self._fd)
        path = self.journal_dir / journal_name(self._number)
        if path.exists() and path.stat().st_size == 0:
            path.unlink()


def read_journal(path: Path, columns: Sequence[str]) -> pa.Table:
    """Some result columns (and ``_index``) of the results a journal holds, as a table: a journal not
    yet committed to a part, read by ``status`` while a runner appends to it or after a kill. Lines that
    do not decode (a torn last line, a line being written) are skipped, as recovery skips them."""
    at = [JOURNAL_LAYOUT.index(c) for c in columns]
    values: list[list[Any]] = [[] for _ in columns]
    try:
        data = path.read_bytes()
    except FileNotFoundError:  # committed and removed since it was listed
        data = b""
    for line in data.splitlines():
        try:
            row = json.loads(line)
            picked = [row[i] for i in at]
        except (ValueError, IndexError, TypeError):
            continue
        for column, value in zip(values, picked, strict=True):
            column.append(value)
    fields = [_BY_NAME[c].field for c in columns]
    try:
        return pa.table(
            [pa.array(v, f.type) for v, f in zip(values, fields, strict=True)], schema=pa.schema(fields)
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SinkError(f"{path} holds a result this version cannot read ({exc})") from exc


def recover_journals(parts_dir: Path, journal_dir: Path, schema: pa.Schema) -> int:
    """Turn journals left by a crash into part files; returns how many rows were recovered.

    A journal whose part exists was already committed (the crash fell between rename and unlink).
    A torn last line (killed inside a write of a huge row) is dropped: that request counts as in flight.
    """
    keep_names = kept_columns(schema)
    recovered = 0
    for journal in sorted(journal_dir.glob("journal-*.jsonl")):
        number = file_number(journal)
        if number is None:
            continue
        part = parts_dir / part_name(number)
        if part.exists():
            journal.unlink()
            continue
        results: list[Result] = []
        tables: list[str] = []
        for line in journal.read_bytes().splitlines():
            try:
                result, table = _decode(line, keep_names)
            except (ValueError, IndexError, TypeError):
                continue
            results.append(result)
            tables.append(table)
        if results:
            write_parquet(results_table(results, schema, tables), part)
            recovered += len(results)
        journal.unlink()
    return recovered
