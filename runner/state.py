"""The job directory: what makes a job resumable, and the one place that knows its layout.

::

    OUT/
      results.parquet          one row per input row with an outcome, in input order (rebuilt at the end)
      _job/
        lock                   flock'ed by the running runner; the kernel drops it when the process dies
        spec.json              the spec as first run (frozen; later runs are recorded in state.json)
        state.json             input fingerprint, runs, part counter
        parts/part-NNNNN.parquet     committed results; a later part wins for the same input position
        journal/journal-NNNNN.jsonl  results not yet in a part (write-ahead; recovered on start)
        events.jsonl           structlog events of every run

Resume reads only the key columns of the parts (``_index``, ``request_key``, ``status``,
``retryable``), never completions, so picking up a million-row job takes a second, not a minute.

A later part wins for the same input position: :class:`NewestRows` is the one reader of that rule,
used by resume (:meth:`JobDir.latest`), ``status`` (:meth:`JobDir.progress`), the rebuild of
``results.parquet`` (:meth:`JobDir.consolidate`) and ``stats``. Every file here is written through
:mod:`runner.atomic`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from runner import atomic
from runner.errors import LockedError, SinkError, StateError
from runner.schemas import INDEX_COLUMN
from runner.sink import file_number, recover_journals, write_parquet

WORK_DIR = "_job"
RESULTS_FILE = "results.parquet"
PARTS_DIR = "parts"
JOURNAL_DIR = "journal"
STATE_FILE = "state.json"
PART_GLOB = "part-*.parquet"
"""Committed parts; the temporary files of :mod:`runner.atomic` start with a dot and never match."""
STATE_VERSION = 1
CONSOLIDATE_CHUNK_ROWS = 10_000
"""Rows per output row group of ``results.parquet``: peak memory of the rebuild grows with it (a 200,000-row
job: 50,000 -> 282 MB, 10,000 -> 226 MB peak RSS), and 10,000 is also the fastest of 5k-50k."""


CONSOLIDATE_CACHE_PARTS = 3
"""Part files kept open (decoded) while results are gathered: parts are mostly in input order, so a
chunk draws on two or three; the rest covers retried rows that landed in later parts."""


def part_files(parts_dir: Path) -> list[Path]:
    """The committed part files of a ``parts`` directory, oldest first (by part number)."""
    numbered = [(n, path) for path in parts_dir.glob(PART_GLOB) if (n := file_number(path)) is not None]
    return [path for _, path in sorted(numbered)]


def read_part(path: Path, columns: list[str] | None = None) -> pa.Table:
    """One committed part file (or some of its columns), read in this thread; a damaged part is a
    :class:`StateError` that says what to do.

    Twice as fast as ``pq.read_table`` on small files, which sets up a dataset scan per file: a
    resume reads the key columns of every part three times (495 parts for a million rows: 0.58 ->
    0.27 s a pass).
    """
    try:
        with pq.ParquetFile(path) as parquet:
            return parquet.read(columns=columns, use_threads=False)
    except (OSError, pa.ArrowInvalid) as exc:
        raise StateError(f"{path} is unreadable ({exc}); move it away and rerun to redo its rows") from exc


@dataclass(frozen=True, slots=True)
class Progress:
    """Outcome counts of a job directory (``status``)."""

    rows: int
    ok: int
    failed: int
    failed_retryable: int
    running: bool

    @property
    def pending(self) -> int:
        return max(0, self.rows - self.ok - self.failed)


class JobDir:
    """One job's directory. Hold :meth:`lock` while changing anything in it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.work = self.root / WORK_DIR
        self.parts = self.work / PARTS_DIR
        self.journal = self.work / JOURNAL_DIR
        self.results = self.root / RESULTS_FILE
        self.state_file = self.work / STATE_FILE
        self.spec_file = self.work / "spec.json"
        self.events_file = self.work / "events.jsonl"

    def exists(self) -> bool:
        return self.state_file.exists()

    def create(self) -> None:
        try:
            for d in (self.root, self.work, self.parts, self.journal):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create the job directory {self.root}: {exc.strerror}") from exc

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock for one runner; a second one gets :class:`LockedError` at once."""
        self.create()
        path = self.work / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = path.read_text().strip() or "another process"
                raise LockedError(
                    f"{self.root} is in use by another bedrock-batch runner ({holder}); "
                    "wait for it to finish or stop it first"
                ) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}".encode())
            yield
        finally:
            os.close(fd)

    def is_locked(self) -> bool:
        """Whether some runner holds the lock right now (for ``status``)."""
        path = self.work / "lock"
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False

    # -- state.json ---------------------------------------------------------------------------

    def read_state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            raise StateError(
                f"{self.root} is not a bedrock-batch job directory (no {WORK_DIR}/state.json)"
            ) from None
        except (OSError, ValueError) as exc:
            raise StateError(
                f"{self.state_file} is unreadable ({exc}); restore it or use a new --output"
            ) from exc
        return data

    def write_state(self, state: dict[str, Any]) -> None:
        atomic.write_text(self.state_file, json.dumps(state, indent=2, sort_keys=True))

    def start_run(
        self, *, spec: dict[str, Any], fingerprint: dict[str, Any], force: bool, stamp: str = ""
    ) -> dict[str, Any]:
        """Create the job or check that this run may resume it; returns the state to keep updating.

        An input whose ids changed since the job began is refused unless ``force``: the rows already
        done would no longer line up with the input.
        """
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        if not self.exists():
            state: dict[str, Any] = {
                "version": STATE_VERSION,
                "created_at": now,
                "input": fingerprint,
                "runs": [],
            }
            atomic.write_text(self.spec_file, json.dumps(spec, indent=2, sort_keys=True))
        else:
            state = self.read_state()
            old = state.get("input", {})
            if old.get("ids_digest") != fingerprint.get("ids_digest") or old.get("rows") != fingerprint.get(
                "rows"
            ):
                if not force:
                    raise StateError(
                        f"the input changed since this job started in {self.root} "
                        f"({old.get('rows')} rows then, {fingerprint.get('rows')} now, ids differ): "
                        "rerun with --force to keep the results whose ids still match and run the rest, "
                        "or use a new --output"
                    )
                state["input"] = fingerprint
                state["input_changed_at"] = now
        # Runs that all saw the same input bytes and request spec may skip done rows by position.
        if "stamp" not in state:
            state["stamp"] = stamp
        elif state["stamp"] != stamp:
            state["stamp"] = None  # mixed history: from now on every resume checks keys
        state["trusted"] = bool(stamp) and state["stamp"] == stamp
        state.setdefault("runs", []).append({"started_at": now, "pid": os.getpid()})
        self.write_state(state)
        return state

    # -- parts --------------------------------------------------------------------------------

    def part_files(self) -> list[Path]:
        return part_files(self.parts)

    def next_part_number(self) -> int:
        files = self.part_files()
        return (file_number(files[-1]) or 0) + 1 if files else 0

    def recover(self, schema: pa.Schema) -> int:
        """Commit journals a crash left behind; returns the rows recovered."""
        return recover_journals(self.parts, self.journal, schema)

    def latest(self, columns: list[str]) -> pa.Table:
        """The newest row per input position across all parts, with ``columns`` (plus ``_index``)."""
        cols = list(dict.fromkeys([INDEX_COLUMN, *columns]))
        newest = NewestRows.scan(self.part_files(), read=read_part)
        tables = list(newest.tables(cols, read=read_part))
        if not tables:
            return pa.table({c: pa.array([], pa.int64()) for c in cols})
        return pa.concat_tables(tables, promote_options="permissive")

    def done_keys(self, *, retry_failed: bool) -> set[int]:
        """Resume keys that need no new request: ok rows, and error rows a retry would not fix.

        Error rows whose error was retryable (throttled to the end, timeouts, 5xx) run again; with
        ``retry_failed`` every error row does.
        """
        return set(self._done(retry_failed).column("request_key").to_pylist())

    def done_rows(self, *, retry_failed: bool) -> set[int]:
        """Input positions of the rows :meth:`done_keys` covers (the trusted resume's fast path)."""
        return set(self._done(retry_failed).column(INDEX_COLUMN).to_pylist())

    def _done(self, retry_failed: bool) -> pa.Table:
        latest = self.latest(["request_key", "status", "retryable"])
        if latest.num_rows == 0:
            return latest
        ok = pc.equal(latest.column("status"), "ok")
        if not retry_failed:
            ok = pc.or_(ok, pc.invert(latest.column("retryable")))
        return latest.filter(ok)

    def progress(self, *, scope: int | None = None) -> Progress:
        """Outcome counts; ``scope`` restricts them to the first ``scope`` input rows (``--limit``)."""
        state = self.read_state()
        ok = failed = retryable_failed = 0
        columns = [INDEX_COLUMN, "status", "retryable"]
        for part in NewestRows.scan(self.part_files(), read=read_part).tables(columns, read=read_part):
            if scope is not None:
                part = part.filter(pc.less(part.column(INDEX_COLUMN), scope))
            is_ok = pc.equal(part.column("status"), "ok")
            retryable = pc.and_(pc.invert(is_ok), pc.fill_null(part.column("retryable"), False))
            ok += _count(is_ok)
            failed += part.num_rows - _count(is_ok)
            retryable_failed += _count(retryable)
        rows = int(state.get("input", {}).get("rows", 0))
        if scope is not None:
            rows = min(rows, scope)
        return Progress(
            rows=rows,
            ok=ok,
            failed=failed,
            failed_retryable=retryable_failed,
            running=self.is_locked(),
        )

    def remap(self, ids: pa.Array) -> None:
        """After ``--force`` on a changed input: move part rows to their ids' new positions, drop the gone."""
        for path in self.part_files():
            table = pq.read_table(path)
            pos = pc.index_in(table.column("id"), value_set=ids)
            keep = pc.is_valid(pos)
            table = table.set_column(
                table.schema.get_field_index(INDEX_COLUMN), INDEX_COLUMN, pc.cast(pos, pa.int64())
            ).filter(keep)
            write_parquet(table, path)

    def consolidate(self) -> int:
        """Rebuild ``results.parquet``: the newest row per input position, in input order.

        Streams in chunks of :data:`CONSOLIDATE_CHUNK_ROWS`, so memory stays flat on a huge job; returns
        the number of rows written.
        """
        files = self.part_files()
        if not files:
            return 0
        newest = NewestRows.scan(files, read=read_part)
        schema = pq.read_schema(files[-1])
        out_schema = schema.remove(schema.get_field_index(INDEX_COLUMN))
        cache: dict[int, pa.Table] = {}
        written = 0
        try:
            with atomic.atomic_write(self.results) as fh:
                writer = pq.ParquetWriter(fh, out_schema, compression="zstd")
                for parts, rows in newest.chunks(CONSOLIDATE_CHUNK_ROWS):
                    writer.write_table(self._gather(parts, rows, files, cache, out_schema))
                    written += len(parts)
                writer.close()
        except OSError as exc:
            raise SinkError(f"cannot write {self.results}: {exc.strerror or exc}") from exc
        return written

    @staticmethod
    def _gather(
        parts: list[int], rows: list[int], files: list[Path], cache: dict[int, pa.Table], schema: pa.Schema
    ) -> pa.Table:
        """Rows of one output chunk (``parts[i]``, ``rows[i]``), fetched from their parts, in that order."""
        pieces: list[pa.Table] = []
        positions: list[int] = []
        by_part: dict[int, list[tuple[int, int]]] = {}
        for pos, (p, r) in enumerate(zip(parts, rows, strict=True)):
            by_part.setdefault(p, []).append((pos, r))
        for p, items in by_part.items():
            if p not in cache:
                if len(cache) >= CONSOLIDATE_CACHE_PARTS:
                    cache.pop(next(iter(cache)))
                cache[p] = read_part(files[p]).drop_columns([INDEX_COLUMN]).cast(schema)
            pieces.append(cache[p].take(pa.array([r for _, r in items], pa.int32())))
            positions.extend(pos for pos, _ in items)
        table = pa.concat_tables(pieces)
        inverse = [0] * len(positions)
        for i, pos in enumerate(positions):
            inverse[pos] = i
        return table.take(pa.array(inverse, pa.int64()))


def _count(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.sum(mask.cast(pa.int64())).as_py() or 0)


Reader = Callable[[Path, list[str]], pa.Table]
"""Reads some columns of one result file (``read_part`` for the engine; ``stats`` has its own errors)."""


class NewestRows:
    """Where each key's newest row is, across result files read oldest first: the one reader of "a later
    part wins for the same input position" (and, within a file, the later row).

    Two 4-byte slots per key, (file, row), filled file by file from the key column alone, a later
    file overwriting: a few bytes per input row, never a table of every part row. The key is the input
    position (``_index``); a file set without it (a ``results.parquet`` alone) is keyed by row id,
    numbered densely over all files.
    """

    def __init__(self, files: Sequence[Path], key: str, codes: list[pa.Array] | None = None) -> None:
        self.files = list(files)
        self.key = key
        self._codes = codes
        """Dense numbers of a key that is not already one (the row id), per file."""
        self.part_of = array("i")
        self.row_of = array("i")

    @classmethod
    def scan(cls, files: Sequence[Path], *, read: Reader, key: str = INDEX_COLUMN) -> NewestRows:
        """Read the key column of every file, oldest first, and note where each key's newest row is."""
        if key == INDEX_COLUMN:
            newest = cls(files, key)
            for number, path in enumerate(files):
                newest._add(number, read(path, [key]).column(key))
            return newest
        columns = [read(path, [key]).column(key) for path in files]
        codes: list[pa.Array] = []
        if columns:
            chunks = pa.chunked_array([k for c in columns for k in c.chunks], columns[0].type)
            indices = chunks.combine_chunks().dictionary_encode().indices.cast(pa.int64())
            start = 0
            for column in columns:
                codes.append(indices.slice(start, len(column)))
                start += len(column)
        newest = cls(files, key, codes)
        for number, positions in enumerate(codes):
            newest._add(number, positions)
        return newest

    def _add(self, number: int, keys: pa.Array | pa.ChunkedArray) -> None:
        positions = keys.to_pylist()
        if positions and (top := max(positions)) >= len(self.part_of):
            grow = top + 1 - len(self.part_of)
            self.part_of.extend(repeat(-1, grow))
            self.row_of.extend(repeat(0, grow))
        for row, position in enumerate(positions):
            self.part_of[position] = number
            self.row_of[position] = row

    def mask(self, number: int, keys: pa.Array | pa.ChunkedArray) -> pa.BooleanArray | None:
        """Which rows of file ``number`` (whose key column is ``keys``) are the newest of their key;
        ``None`` when all of them are (the common case)."""
        codes = self._codes[number] if self._codes is not None else keys
        if len(codes) == 0:
            return None
        part_of = pa.Array.from_buffers(pa.int32(), len(self.part_of), [None, pa.py_buffer(self.part_of)])
        row_of = pa.Array.from_buffers(pa.int32(), len(self.row_of), [None, pa.py_buffer(self.row_of)])
        mine = pc.equal(pc.take(part_of, codes), pa.scalar(number, pa.int32()))
        rows = pa.array(range(len(codes)), pa.int32())
        newest = pc.and_(mine, pc.equal(pc.take(row_of, codes), rows))
        if pc.all(newest).as_py():
            return None
        return newest.combine_chunks() if isinstance(newest, pa.ChunkedArray) else newest

    def tables(self, columns: list[str], *, read: Reader) -> Iterator[pa.Table]:
        """Each file's newest rows, with ``columns``, oldest file first."""
        wanted = list(dict.fromkeys([*columns, self.key]))
        for number, path in enumerate(self.files):
            table = read(path, wanted)
            mask = self.mask(number, table.column(self.key))
            if mask is not None:
                table = table.filter(mask)
            yield table.select(columns)

    def chunks(self, size: int) -> Iterator[tuple[list[int], list[int]]]:
        """(file, row) of the newest row of each key, in key order, ``size`` at a time."""
        parts: list[int] = []
        rows: list[int] = []
        for position, part in enumerate(self.part_of):
            if part < 0:
                continue  # no outcome yet (pending)
            parts.append(part)
            rows.append(self.row_of[position])
            if len(parts) == size:
                yield parts, rows
                parts, rows = [], []
        if parts:
            yield parts, rows
