"""The batch lane's pure half: records -> JSONL shards, and Bedrock's output lines -> outcomes.

Bedrock batch inference takes JSONL files of ``{"recordId", "modelInput"}`` lines, at least
``min_records`` and at most ``max_records`` per job, and writes back, in no guaranteed order,
``{"recordId", "modelInput", "modelOutput"}`` or ``{..., "error": {"errorCode", "errorMessage"}}``
lines. This module knows those formats and the planning rules, and nothing about S3, HTTP or time:
:mod:`runner.batch.lane` does the submitting, polling and collecting around it.

Planning streams the source's records into shard files in input order, one shard at a time, so memory
holds one line, never a shard. A shard closes at ``max_records`` or when the next line would pass
``max_shard_bytes``; a closed shard with fewer than ``min_records`` (the remainder at the end, or a
run of huge rows) is discarded and its rows stay for the on-demand pool. Beside each shard, a small
Parquet file keeps what a result row needs and Bedrock does not echo back: id, resume key and the
kept columns, keyed by input position. ``recordId`` is the input position, zero-padded to eleven
digits (the documented shape of a record id), so every output line maps back to its row.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Generator, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from runner.answer import NotAMessageError, read_message
from runner.atomic import AtomicFile
from runner.schemas import INDEX_COLUMN
from runner.types import Record, Usage

RECORD_ID_DIGITS = 11
SHARD_SUFFIX = ".jsonl"
ROWS_SUFFIX = ".rows.parquet"
OUTPUT_SUFFIX = ".out"
"""Bedrock names each output file after its input file plus this."""
MANIFEST_FILE = "manifest.json.out"
_ROWS_FLUSH = 4096


def record_id(index: int) -> str:
    """The ``recordId`` of the row at input position ``index``."""
    return f"{index:0{RECORD_ID_DIGITS}d}"


def record_index(rid: str) -> int:
    """The input position a ``recordId`` names; ``ValueError`` for one the runner did not write."""
    if not rid.isdigit():
        raise ValueError(f"not a bedrock-batch record id: {rid!r}")
    return int(rid)


def jsonl_line(record: Record) -> bytes:
    """One input line. The body bytes go in as they are: the same bytes InvokeModel would get."""
    if record.body is None:
        raise ValueError(f"record {record.id!r} has no request body")
    return b'{"recordId":"' + record_id(record.index).encode() + b'","modelInput":' + record.body + b"}\n"


def shard_name(number: int) -> str:
    return f"shard-{number:05d}{SHARD_SUFFIX}"


def rows_name(number: int) -> str:
    return f"shard-{number:05d}{ROWS_SUFFIX}"


def output_name(input_name: str) -> str:
    """``shard-00000.jsonl`` -> ``shard-00000.jsonl.out``."""
    return input_name + OUTPUT_SUFFIX


_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9]+")


def safe_name(name: str) -> str:
    """``name`` reduced to what job names and S3 prefixes take safely: letters, digits, dashes, 32 long."""
    return _NAME_UNSAFE.sub("-", name).strip("-")[:32].strip("-") or "job"


def job_name(name: str, job_key: str, number: int) -> str:
    """A ``jobName`` Bedrock accepts (``[a-zA-Z0-9](-*[a-zA-Z0-9+.-])*``, at most 63 characters)."""
    return f"{safe_name(name)}-{job_key[:8]}-{number:05d}"


def client_request_token(job_key: str, number: int, sha256: str) -> str:
    """The idempotency token of a shard's CreateModelInvocationJob: job, shard number, content hash.

    The same shard always sends the same token, so a create retried after a timeout or a crash
    returns the job already made instead of a second, paid one; different content (a re-planned
    shard) gets a different token.
    """
    return f"bb-{job_key}-{number:05d}-{sha256[:32]}"


@dataclass(frozen=True, slots=True)
class Shard:
    """One planned shard: a JSONL file of ``records`` lines and its rows file, in the shard directory."""

    number: int
    records: int
    bytes: int
    sha256: str
    first_index: int
    last_index: int
    input_tokens: int
    """Estimated input tokens of its rows (what admission would reserve), for the cost cap and logs."""
    max_output_tokens: int
    """The sum of its rows' ``max_tokens``: the output it could cost at most."""

    @property
    def file(self) -> str:
        return shard_name(self.number)

    @property
    def rows_file(self) -> str:
        return rows_name(self.number)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Shard:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


class _OpenShard:
    """The shard being written: its JSONL file, running hash and buffered rows."""

    def __init__(self, directory: Path, number: int, schema: pa.Schema) -> None:
        self.number = number
        self.jsonl = AtomicFile(directory / shard_name(number))
        self.rows = AtomicFile(directory / rows_name(number))
        self.hash = hashlib.sha256()
        self.schema = schema
        self.writer: pq.ParquetWriter | None = None
        self.buffer: list[Record] = []
        self.count = self.size = 0
        self.first_index = self.last_index = -1
        self.input_tokens = self.max_output_tokens = 0

    def add(self, record: Record, line: bytes) -> None:
        self.jsonl.handle.write(line)
        self.hash.update(line)
        self.count += 1
        self.size += len(line)
        if self.first_index < 0:
            self.first_index = record.index
        self.last_index = record.index
        self.input_tokens += record.estimated_input_tokens
        self.max_output_tokens += record.max_tokens
        self.buffer.append(record)
        if len(self.buffer) >= _ROWS_FLUSH:
            self._flush_rows()

    def _flush_rows(self) -> None:
        if not self.buffer:
            return
        cols: dict[str, Any] = {
            INDEX_COLUMN: [r.index for r in self.buffer],
            "id": [r.id for r in self.buffer],
            "request_key": [r.key for r in self.buffer],
        }
        for f in self.schema:
            if f.name not in cols:
                cols[f.name] = [r.keep.get(f.name) for r in self.buffer]
        table = pa.table(
            {f.name: pa.array(cols[f.name], type=f.type) for f in self.schema}, schema=self.schema
        )
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.rows.handle, self.schema, compression="zstd")
        self.writer.write_table(table)
        self.buffer = []

    def close(self) -> Shard:
        """Put both files in place (the rows file first) and describe the shard."""
        self._flush_rows()
        assert self.writer is not None
        self.writer.close()
        self.rows.commit()
        self.jsonl.commit()
        return Shard(
            number=self.number,
            records=self.count,
            bytes=self.size,
            sha256=self.hash.hexdigest(),
            first_index=self.first_index,
            last_index=self.last_index,
            input_tokens=self.input_tokens,
            max_output_tokens=self.max_output_tokens,
        )

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.jsonl.discard()
        self.rows.discard()


def rows_schema(keep_fields: Iterable[pa.Field], id_type: pa.DataType | None = None) -> pa.Schema:
    """Schema of a shard's rows file: input position, id (of the input's id type), resume key, then
    the kept columns."""
    return pa.schema(
        [
            pa.field(INDEX_COLUMN, pa.int64(), nullable=False),
            pa.field("id", id_type or pa.string(), nullable=False),
            pa.field("request_key", pa.int64(), nullable=False),
            *keep_fields,
        ]
    )


def plan_shards(
    batches: Iterable[list[Record]],
    directory: Path,
    *,
    first_number: int,
    min_records: int,
    max_records: int,
    max_bytes: int,
    keep_fields: Iterable[pa.Field] = (),
    id_type: pa.DataType | None = None,
) -> Generator[Shard, None, None]:
    """Write the records into shard files in ``directory``, yielding each shard as it is finished.

    Records without a body (rows that cannot become requests) and records whose one line is larger
    than ``max_bytes`` are left out: the on-demand pool turns them into results. A shard that ends
    with fewer than ``min_records`` lines is deleted, so its rows stay for the pool too. A generator
    that holds one open shard: stopping early leaves only temporary files, which the next plan
    overwrites.
    """
    schema = rows_schema(keep_fields, id_type)
    number = first_number
    current: _OpenShard | None = None
    try:
        for batch in batches:
            for record in batch:
                if record.body is None:
                    continue
                line = jsonl_line(record)
                if len(line) > max_bytes:
                    continue
                if current is not None and (
                    current.count >= max_records or current.size + len(line) > max_bytes
                ):
                    finished, current = current, None
                    if finished.count >= min_records:
                        yield finished.close()
                        number += 1
                    else:
                        finished.discard()
                if current is None:
                    current = _OpenShard(directory, number, schema)
                current.add(record, line)
        if current is not None:
            finished, current = current, None
            if finished.count >= min_records:
                yield finished.close()
            else:
                finished.discard()
    finally:
        if current is not None:
            current.discard()


# -- output ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """One line of a batch output file: the answer, or the error Bedrock recorded for the row."""

    index: int
    text: str | None = None
    stop_reason: str | None = None
    usage: Usage = Usage()
    content: str | None = None
    tool_input: str | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_code is None


def parse_output_line(line: bytes) -> OutputRecord:
    """Read one output line; ``ValueError`` for a line that is not one (the row then runs on-demand).

    A ``modelOutput`` that is not a Messages response counts as an error of the row, never a crash.
    """
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a JSON line ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("recordId"), str):
        raise ValueError("no recordId")
    index = record_index(data["recordId"])
    error = data.get("error")
    if error is not None:
        if not isinstance(error, dict):
            error = {"errorMessage": str(error)}
        code = error.get("errorCode")
        return OutputRecord(
            index=index,
            error_code=str(code) if code is not None else "BatchRecordError",
            error_message=str(error.get("errorMessage") or ""),
        )
    try:
        message = read_message(data.get("modelOutput"))
    except NotAMessageError as exc:
        return OutputRecord(
            index=index,
            error_code="MalformedOutput",
            error_message=f"modelOutput is not a Messages response: {exc}",
        )
    return OutputRecord(
        index=index,
        text=message.text,
        stop_reason=message.stop_reason,
        usage=message.usage,
        content=message.content,
        tool_input=message.tool_input,
    )


@dataclass(frozen=True, slots=True)
class Manifest:
    """``manifest.json.out``: Bedrock's own counts for a job (logged beside ours, never trusted over them)."""

    total_records: int = 0
    processed_records: int = 0
    success_records: int = 0
    error_records: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    @classmethod
    def parse(cls, raw: bytes) -> Manifest:
        """Tolerant: missing or odd fields read as 0, since the figures are informational."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return cls()
        if not isinstance(data, dict):
            return cls()

        def n(key: str) -> int:
            value = data.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        return cls(
            total_records=n("totalRecordCount"),
            processed_records=n("processedRecordCount"),
            success_records=n("successRecordCount"),
            error_records=n("errorRecordCount"),
            input_tokens=n("inputTokenCount"),
            output_tokens=n("outputTokenCount"),
        )
