"""Where results go: a write-ahead journal line per result, and Parquet part files committed atomically.

Every result is appended to the current journal with one ``write(2)`` the moment it arrives, so a
hard kill loses only requests still in flight, never a finished (and paid-for) one. Every
``part_rows`` results or ``part_seconds``, the buffered rows become ``parts/part-NNNNN.parquet``
(temporary file, fsync, rename, fsync of the directory), and only then is the matching journal
deleted. On start, :func:`recover_journals` turns any journal left by a crash into its part.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from runner.atomic import atomic_write
from runner.errors import SinkError
from runner.schemas import RESULT_SCHEMA
from runner.types import Result, Usage

INDEX_COLUMN = "_index"
"""Input position of the row; part files carry it, ``results.parquet`` is ordered by it."""

_UTC = dt.UTC


def part_schema(keep_fields: Sequence[pa.Field]) -> pa.Schema:
    """Schema of part files: the result columns, the input position, then the kept input columns."""
    return pa.schema([*RESULT_SCHEMA, pa.field(INDEX_COLUMN, pa.int64(), nullable=False), *keep_fields])


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


def _encode(result: Result, price_table: str, keep_names: Sequence[str]) -> bytes:
    u = result.usage
    row = [
        result.index, result.id, result.key, result.status, result.completion, result.stop_reason,
        u.input_tokens, u.output_tokens, u.cache_creation_input_tokens, u.cache_read_input_tokens,
        result.model_id, result.region, result.attempts, result.latency_ms, result.error_type,
        result.error_message, result.request_id, result.retryable, result.cost_usd, price_table,
        result.lane, result.started_at, result.finished_at,
        [_to_json(result.keep.get(name)) for name in keep_names],
    ]  # fmt: skip
    return (_JOURNAL_ENCODER.encode(row) + "\n").encode()


def _decode(line: bytes, keep_names: Sequence[str]) -> tuple[Result, str]:
    r = json.loads(line)
    keep = dict(zip(keep_names, (_from_json(v) for v in r[23]), strict=False))
    result = Result(
        index=r[0], id=r[1], key=r[2], status=r[3], completion=r[4], stop_reason=r[5],
        usage=Usage(r[6], r[7], r[8], r[9]), model_id=r[10], region=r[11], attempts=r[12],
        latency_ms=r[13], error_type=r[14], error_message=r[15], request_id=r[16], retryable=r[17],
        cost_usd=r[18], lane=r[20], started_at=r[21], finished_at=r[22], keep=keep,
    )  # fmt: skip
    return result, r[19]


def _ts(seconds: float) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(seconds, _UTC) if seconds else None


def results_table(results: Sequence[Result], schema: pa.Schema, price_tables: Sequence[str]) -> pa.Table:
    """Build a part table from results (column by column: cheaper than row dicts)."""
    keep_fields = [f for f in schema if f.name not in RESULT_SCHEMA.names and f.name != INDEX_COLUMN]
    cols: dict[str, list[Any]] = {
        "id": [r.id for r in results],
        "status": [r.status for r in results],
        "completion": [r.completion for r in results],
        "stop_reason": [r.stop_reason for r in results],
        "input_tokens": [r.usage.input_tokens for r in results],
        "output_tokens": [r.usage.output_tokens for r in results],
        "cache_creation_input_tokens": [r.usage.cache_creation_input_tokens for r in results],
        "cache_read_input_tokens": [r.usage.cache_read_input_tokens for r in results],
        "model_id": [r.model_id for r in results],
        "region": [r.region for r in results],
        "attempts": [r.attempts for r in results],
        "latency_ms": [r.latency_ms for r in results],
        "error_type": [r.error_type for r in results],
        "error_message": [r.error_message for r in results],
        "request_id": [r.request_id for r in results],
        "cost_usd": [r.cost_usd for r in results],
        "price_table": list(price_tables),
        "lane": [r.lane for r in results],
        "started_at": [_ts(r.started_at) for r in results],
        "finished_at": [_ts(r.finished_at) for r in results],
        "retryable": [r.retryable for r in results],
        "request_key": [r.key for r in results],
        INDEX_COLUMN: [r.index for r in results],
    }
    for f in keep_fields:
        cols[f.name] = [r.keep.get(f.name) for r in results]
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
    ) -> None:
        self.parts_dir = parts_dir
        self.journal_dir = journal_dir
        self.schema = schema
        self.price_table = price_table
        self.keep_names = [
            f.name for f in schema if f.name not in RESULT_SCHEMA.names and f.name != INDEX_COLUMN
        ]
        self.part_rows = part_rows
        self.part_seconds = part_seconds
        self._number = next_number
        self._rows: list[Result] = []
        self._opened = time.monotonic()
        self._fd = self._open_journal()

    def _open_journal(self) -> int:
        path = self.journal_dir / journal_name(self._number)
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise SinkError(f"cannot open the journal {path}: {exc.strerror}") from exc

    def add(self, result: Result) -> None:
        """Journal one result (one write(2): a kill leaves a whole line or none)."""
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


def recover_journals(parts_dir: Path, journal_dir: Path, schema: pa.Schema) -> int:
    """Turn journals left by a crash into part files; returns how many rows were recovered.

    A journal whose part exists was already committed (the crash fell between rename and unlink).
    A torn last line (killed inside a write of a huge row) is dropped: that request counts as in flight.
    """
    keep_names = [f.name for f in schema if f.name not in RESULT_SCHEMA.names and f.name != INDEX_COLUMN]
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
