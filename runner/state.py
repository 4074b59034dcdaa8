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
import itertools
import json
import os
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
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
"""Rows per output row group of ``results.parquet``: peak memory of the rebuild grows with it, and
10,000 was also the fastest of 5k-50k (bench/notes.md, "Measurements behind the code")."""


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

    Faster than ``pq.read_table`` on small files, which sets up a dataset scan per file; a resume
    reads the key columns of every part three times (bench/notes.md, "Measurements behind the code").
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

    @property
    def complete(self) -> bool:
        """Every input row has an outcome, ok or error (``stats`` and ``status`` mean the same)."""
        return self.pending == 0


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
            raise SinkError(
                f"cannot create the job directory {self.root.absolute()}: {exc.strerror}"
            ) from exc

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
                f"{self.root.absolute()} is not a bedrock-batch job directory (no {WORK_DIR}/state.json)"
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
        tables = NewestRows.tables(self.part_files(), cols, read=read_part)
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
        """Outcome counts; ``scope`` restricts them to the first ``scope`` input rows (``--limit``).

        Each part is reduced to its positions and a one-byte outcome as it is read, so the count holds
        five bytes per part row: it runs at the end of every job, where a job's memory peaks.
        """
        state = self.read_state()
        files = self.part_files()
        newest = NewestRows.scan(files, read=read_part)
        counts: dict[int, int] = {}
        for number, path in enumerate(files):
            part = _read_outcomes(path)
            mask = newest.mask(number, part.column(INDEX_COLUMN))
            if mask is not None:
                part = part.filter(mask)
            if scope is not None:
                part = part.filter(pc.less(part.column(INDEX_COLUMN), scope))
            for item in pc.value_counts(part.column("outcome")).to_pylist():
                counts[item["values"]] = counts.get(item["values"], 0) + item["counts"]
        ok, retryable_failed = counts.get(_OK, 0), counts.get(_RETRYABLE, 0)
        rows = int(state.get("input", {}).get("rows", 0))
        if scope is not None:
            rows = min(rows, scope)
        return Progress(
            rows=rows,
            ok=ok,
            failed=counts.get(_FAILED, 0) + retryable_failed,
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


_OK, _FAILED, _RETRYABLE = 1, 2, 3
"""A row's outcome in :meth:`JobDir.progress`."""


def _read_outcomes(path: Path) -> pa.Table:
    """A part reduced to its positions (int32) and ``outcome`` (int8: ok, failed, failed and retryable)."""
    part = read_part(path, [INDEX_COLUMN, "status", "retryable"])
    retryable = pc.fill_null(part.column("retryable"), False)
    outcome = pc.if_else(
        pc.equal(part.column("status"), "ok"), _OK, pc.if_else(retryable, _RETRYABLE, _FAILED)
    )
    return pa.table(
        {
            INDEX_COLUMN: pc.cast(part.column(INDEX_COLUMN), pa.int32()),
            "outcome": pc.cast(outcome, pa.int8()),
        }
    )


Reader = Callable[[Path, list[str]], pa.Table]
"""Reads some columns of one result file (``read_part`` for the engine; ``stats`` has its own errors)."""


def _arange(n: int) -> pa.Array:
    """0, 1, ..., n - 1 as int32 (four bytes each, no temporaries)."""
    return pa.Array.from_buffers(pa.int32(), n, [None, pa.py_buffer(array("i", range(n)))])


class NewestRows:
    """Where each key's newest row is, across result files read oldest first: the one reader of "a later
    part wins for the same input position" (and, within a file, the later row).

    The rows of all files are numbered in reading order (``seq``); ``winner[k]`` is the ``seq`` of key
    ``k``'s newest row (null: no row yet). Built from the key columns alone, in Arrow compute: the
    inverse permutation of the keys when every key is distinct (the usual case), else a stable sort of
    the keys picks the last of each run. Four bytes per key and per row, never a table of every part
    row. The key is the input position (``_index``); a file set without it (a ``results.parquet``
    alone) is keyed by row id, numbered densely over all files.
    """

    def __init__(self, files: Sequence[Path], key: str, keys: Sequence[pa.Array]) -> None:
        self.files = list(files)
        self.key = key
        sizes = [len(k) for k in keys]
        self._offsets = [0, *itertools.accumulate(sizes)]
        self._codes: list[pa.Array] | None = None
        if key != INDEX_COLUMN and keys:  # number the ids densely over all files
            flat = pa.chunked_array(keys, keys[0].type).combine_chunks()
            codes = flat.dictionary_encode().indices
            self._codes = [codes.slice(self._offsets[n], size) for n, size in enumerate(sizes)]
            keys = self._codes
        self.winner = _winners(pa.chunked_array([k.cast(pa.int32()) for k in keys], pa.int32()))

    @classmethod
    def scan(cls, files: Sequence[Path], *, read: Reader, key: str = INDEX_COLUMN) -> NewestRows:
        """Read the key column of every file, oldest first, and note where each key's newest row is."""
        if key != INDEX_COLUMN:
            return cls(files, key, [_flat(read(path, [key]).column(key)) for path in files])
        # Four bytes a row from the start: each int64 column is let go as soon as it is read.
        return cls(files, key, [_flat(pc.cast(read(path, [key]).column(key), pa.int32())) for path in files])

    @classmethod
    def tables(cls, files: Sequence[Path], columns: list[str], *, read: Reader) -> list[pa.Table]:
        """Each file's newest rows (by ``_index``), with ``columns``, oldest file first: every file is
        read once, and only ``columns`` (``read`` may also reduce what it read to them)."""
        wanted = list(dict.fromkeys([*columns, INDEX_COLUMN]))
        tables = [read(path, wanted) for path in files]
        newest = cls(files, INDEX_COLUMN, [_flat(t.column(INDEX_COLUMN)) for t in tables])
        out = []
        for number, table in enumerate(tables):
            mask = newest.mask(number, table.column(INDEX_COLUMN))
            out.append((table if mask is None else table.filter(mask)).select(columns))
        return out

    def mask(self, number: int, keys: pa.Array | pa.ChunkedArray, start: int = 0) -> pa.BooleanArray | None:
        """Which of the rows ``start..`` of file ``number`` (whose keys are ``keys``) are the newest of
        their key; ``None`` when all of them are (the common case)."""
        codes = self._codes[number].slice(start, len(keys)) if self._codes is not None else _flat(keys)
        if len(codes) == 0:
            return None
        offset = self._offsets[number] + start
        mine = pc.subtract(pc.take(self.winner, codes.cast(pa.int32())), offset)
        newest = pc.equal(mine, _arange(len(codes)))
        if pc.all(newest).as_py():
            return None
        return newest

    def chunks(self, size: int) -> Iterator[tuple[list[int], list[int]]]:
        """(file, row) of the newest row of each key, in key order, ``size`` at a time."""
        seqs = self.winner.drop_null()
        bounds = itertools.pairwise(self._offsets)
        file_of = pa.concat_arrays(
            [pa.array([], pa.int32())]
            + [pa.nulls(end - start, pa.int32()).fill_null(n) for n, (start, end) in enumerate(bounds)]
        )
        starts = pa.array(self._offsets[:-1], pa.int32())
        for start in range(0, len(seqs), size):
            chunk = seqs.slice(start, size)
            parts = pc.take(file_of, chunk)
            yield parts.to_pylist(), pc.subtract(chunk, pc.take(starts, parts)).to_pylist()


def _flat(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _winners(keys: pa.ChunkedArray) -> pa.Array:
    """For each key value ``k`` in ``0..max(keys)``, the index of its last occurrence in ``keys`` (null
    where it never occurs); int32."""
    n = len(keys)
    if n == 0:
        return pa.array([], pa.int32())
    top = int(pc.max(keys).as_py())
    winner = _flat(pc.inverse_permutation(keys, max_index=top, output_type=pa.int32()))
    if winner.null_count == top + 1 - n:
        return winner  # every key distinct: the inverse permutation is the answer
    del winner
    order = pc.sort_indices(keys)  # stable: the rows of one key stay in reading order
    ordered = _flat(pc.take(keys, order))
    last = pa.concat_arrays([pc.not_equal(ordered.slice(0, n - 1), ordered.slice(1)), pa.array([True])])
    return pc.scatter(pc.cast(order.filter(last), pa.int32()), ordered.filter(last), max_index=top)
