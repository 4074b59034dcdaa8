"""The job directory: what makes a job resumable, and the one place that knows its layout.

::

    OUT/
      results.parquet          one row per input row with an outcome, in input order (rebuilt at the end)
      _job/
        lock                   flock'ed by the running runner; the kernel drops it when the process dies
        spec.json              the spec as first run (frozen; later runs are recorded in state.json)
        state.json             input fingerprint, runs, part counter
        results.json           which parts results.parquet was last rebuilt from
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
import hashlib
import itertools
import json
import os
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from runner import atomic
from runner.errors import LockedError, SinkError, StateError
from runner.schemas import INDEX_COLUMN
from runner.sink import file_number, part_name, read_journal, recover_journals, write_parquet

WORK_DIR = "_job"
RESULTS_FILE = "results.parquet"
PARTS_DIR = "parts"
JOURNAL_DIR = "journal"
STATE_FILE = "state.json"
RESULTS_STAMP = "results.json"
"""Which parts ``results.parquet`` was last rebuilt from (see :meth:`JobDir.results_current`)."""
PART_GLOB = "part-*.parquet"
"""Committed parts; the temporary files of :mod:`runner.atomic` start with a dot and never match."""
PRIVATE_DIR_MODE = 0o700
"""Permissions of a new job directory and its working directories (the umask may only narrow them)."""
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
        self.results_stamp = self.work / RESULTS_STAMP

    def exists(self) -> bool:
        return self.state_file.exists()

    def is_emulated(self) -> bool:
        """Whether the job's rows are a dry run's (``run --emulate``), not Bedrock's."""
        try:
            return bool(self.read_state().get("emulated", False))
        except StateError:
            return False

    def create(self) -> None:
        """Make the job directory and its working directories, private (``0700``) when they are new:
        they hold prompts and completions. A directory that already exists keeps its permissions."""
        try:
            for d in (self.root, self.work, self.parts, self.journal):
                d.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(
                f"cannot create the job directory {self.root.absolute()}: {exc.strerror}"
            ) from exc

    def check_output(self) -> None:
        """Before anything is paid for: the files a run writes can be written (:class:`SinkError` if not).

        ``results.parquet`` must be a regular file or absent (a directory there was found only after
        every row was paid), and the directories must take a new file: one is created and removed
        where ``results.parquet``, the parts and ``state.json`` are written.
        """
        if self.results.exists() and not self.results.is_file():
            raise SinkError(
                f"{self.results} exists and is not a regular file; move it away or use another --output"
            )
        for path in (self.results, self.parts / part_name(0), self.state_file):
            probe = atomic.temporary_name(path)
            try:
                with open(probe, "wb"):
                    pass
                probe.unlink()
            except OSError as exc:
                raise SinkError(
                    f"cannot write in {path.parent}: {exc.strerror or exc}; fix it or use another --output"
                ) from exc

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock for one runner; a second one gets :class:`LockedError` at once."""
        self.create()
        path = self.work / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, atomic.PRIVATE_FILE_MODE)
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
        self,
        *,
        spec: dict[str, Any],
        fingerprint: dict[str, Any],
        force: bool,
        stamp: str = "",
        emulated: bool = False,
    ) -> dict[str, Any]:
        """Create the job or check that this run may resume it; returns the state to keep updating.

        An input whose ids changed since the job began is refused unless ``force``: the rows already
        done would no longer line up with the input. A dry run (``emulated``, ``run --emulate``) and a
        real run never share a directory: the emulator's invented answers would pass for paid ones,
        and the real run would skip their rows.
        """
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        if not self.exists():
            state: dict[str, Any] = {
                "version": STATE_VERSION,
                "created_at": now,
                "input": fingerprint,
                "runs": [],
                "emulated": emulated,
            }
            atomic.write_text(self.spec_file, json.dumps(spec, indent=2, sort_keys=True))
        else:
            state = self.read_state()
            was_emulated = bool(state.get("emulated", False))
            if was_emulated and not emulated:
                raise StateError(
                    f"{self.root} holds a dry run's answers (run --emulate), which a real run must not "
                    "mix with its own: give the real run another --output, or delete this directory"
                )
            if emulated and not was_emulated:
                raise StateError(
                    f"{self.root} is a real job's directory; run --emulate never writes into one: "
                    "leave out --output (a dry run uses <output>-emulated) or name another directory"
                )
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
                # Until remap() has moved every part row to its new position, the parts do not match
                # this fingerprint: a run killed in between finds the flag and remaps again.
                state["remap_pending"] = True
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

    def journals_uncommitted(self) -> list[Path]:
        """Journals whose results are in no part yet (a run in progress, or one that was killed)."""
        out = []
        for path in self.journal.glob("journal-*.jsonl"):
            number = file_number(path)
            if number is not None and not (self.parts / part_name(number)).exists():
                out.append(path)
        return out

    def progress(self, *, scope: int | None = None) -> Progress:
        """Outcome counts; ``scope`` restricts them to the first ``scope`` input rows (``--limit``).

        Results still in a journal count too (a runner at work, or one killed before it committed
        them: ``status`` used to show them as pending), each journal where its part will go. Each file
        is reduced to its positions and a one-byte outcome as it is read, so the count holds five bytes
        per row: it runs at the end of every job, where a job's memory peaks.
        """
        state = self.read_state()
        files = sorted([*self.part_files(), *self.journals_uncommitted()], key=lambda p: file_number(p) or 0)
        newest = NewestRows.scan(files, read=_read_results)
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
        """After ``--force`` on a changed input: move part rows to their ids' new positions, drop the gone.

        Resumable: each part is rewritten atomically, and a row's new position depends only on its id
        and ``ids``, so a remap killed halfway and run again (``remap_pending`` in ``state.json``, set
        by :meth:`start_run`, cleared here at the end) gives what one uninterrupted remap gives.
        """
        for path in self.part_files():
            table = pq.read_table(path)
            pos = pc.index_in(table.column("id").cast(pa.string()), value_set=ids.cast(pa.string()))
            keep = pc.is_valid(pos)
            table = table.set_column(
                table.schema.get_field_index(INDEX_COLUMN), INDEX_COLUMN, pc.cast(pos, pa.int64())
            ).filter(keep)
            write_parquet(table, path)
        state = self.read_state()
        if state.pop("remap_pending", None) is not None:
            self.write_state(state)

    def consolidate(self, schema: pa.Schema | None = None, *, kept: KeptValues | None = None) -> int:
        """Rebuild ``results.parquet``: the newest row per input position, in input order.

        ``schema`` is the part schema of this run (default: the newest part's); older parts are made
        to fit it (a column they lack is null, an id is cast to its type). ``kept`` gives the kept
        input columns' current values: a row that did not run again still shows today's ``team``, not
        the one it had when it ran. Streams in chunks of :data:`CONSOLIDATE_CHUNK_ROWS`, so memory
        stays flat on a huge job; returns the number of rows written. Then records which parts the
        file was built from (:meth:`results_current`). With no part yet (an input of zero rows, or
        nothing done), the file is written empty with ``schema`` when one is given, so it always
        exists after a run; without one, nothing is written.
        """
        files = self.part_files()
        if not files and schema is None:
            return 0
        newest = NewestRows.scan(files, read=read_part)
        if schema is None:
            schema = pq.read_schema(files[-1])
        out_schema = schema.remove(schema.get_field_index(INDEX_COLUMN))
        cache: dict[int, pa.Table] = {}
        written = 0
        try:
            with atomic.atomic_write(self.results) as fh:
                writer = pq.ParquetWriter(fh, out_schema, compression="zstd")
                for parts, rows in newest.chunks(CONSOLIDATE_CHUNK_ROWS):
                    table = self._gather(parts, rows, files, cache, schema)
                    if kept is not None:
                        table = _with_kept(table, kept)
                    writer.write_table(table.drop_columns([INDEX_COLUMN]))
                    written += len(parts)
                writer.close()
        except OSError as exc:
            raise SinkError(f"cannot write {self.results}: {exc.strerror or exc}") from exc
        atomic.write_text(self.results_stamp, json.dumps({"parts": self._parts_digest(), "rows": written}))
        return written

    def _parts_digest(self) -> str:
        """Names, sizes and modification times of the committed parts: changes whenever a part does."""
        h = hashlib.blake2b(digest_size=16)
        for path in self.part_files():
            info = path.stat()
            h.update(f"{path.name}\x1f{info.st_size}\x1f{info.st_mtime_ns}\x1e".encode())
        return h.hexdigest()

    def results_current(self) -> bool:
        """Whether ``results.parquet`` was rebuilt from exactly the parts there are now (nothing
        committed, remapped or removed since): then it holds the same rows as the parts, with the
        kept columns' current values, and ``stats`` reads it instead of the parts."""
        try:
            stamp = json.loads(self.results_stamp.read_text())
        except (OSError, ValueError):
            return False
        return (
            isinstance(stamp, dict) and self.results.is_file() and stamp.get("parts") == self._parts_digest()
        )

    @staticmethod
    def _gather(
        parts: list[int], rows: list[int], files: list[Path], cache: dict[int, pa.Table], schema: pa.Schema
    ) -> pa.Table:
        """Rows of one output chunk (``parts[i]``, ``rows[i]``), fetched from their parts, in that order,
        with the input position."""
        pieces: list[pa.Table] = []
        positions: list[int] = []
        by_part: dict[int, list[tuple[int, int]]] = {}
        for pos, (p, r) in enumerate(zip(parts, rows, strict=True)):
            by_part.setdefault(p, []).append((pos, r))
        for p, items in by_part.items():
            if p not in cache:
                if len(cache) >= CONSOLIDATE_CACHE_PARTS:
                    cache.pop(next(iter(cache)))
                cache[p] = _conform(read_part(files[p]), schema)
            pieces.append(cache[p].take(pa.array([r for _, r in items], pa.int32())))
            positions.extend(pos for pos, _ in items)
        table = pa.concat_tables(pieces)
        inverse = [0] * len(positions)
        for i, pos in enumerate(positions):
            inverse[pos] = i
        return table.take(pa.array(inverse, pa.int64()))


class KeptValues(Protocol):
    """The kept input columns' current values by input position (``Source.kept_values``)."""

    names: list[str]

    def take(self, positions: Sequence[int]) -> pa.Table:
        """The kept columns of the rows at ``positions`` (ascending, and ascending from one call to
        the next), in that order."""
        ...


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns: each cast to its type, a missing one all null (a
    part an older version wrote, a kept column added since)."""
    have = set(table.column_names)
    columns = [
        table.column(f.name).cast(f.type) if f.name in have else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _with_kept(table: pa.Table, kept: KeptValues) -> pa.Table:
    """``table`` (with ``_index``) whose kept columns hold the values ``kept`` has for its positions."""
    if not kept.names:
        return table
    current = kept.take(table.column(INDEX_COLUMN).to_pylist())
    for name in kept.names:
        at = table.schema.get_field_index(name)
        column = current.column(name)
        if at >= 0:
            column = column.cast(table.schema.field(at).type)
            table = table.set_column(at, name, column)
    return table


_OK, _FAILED, _RETRYABLE = 1, 2, 3
"""A row's outcome in :meth:`JobDir.progress`."""


def _read_results(path: Path, columns: list[str]) -> pa.Table:
    """Some columns of a part file, or of a journal not committed yet."""
    if path.suffix == ".jsonl":
        return read_journal(path, columns)
    return read_part(path, columns)


def _read_outcomes(path: Path) -> pa.Table:
    """A part (or journal) reduced to its positions (int32) and ``outcome`` (int8: ok, failed, failed and
    retryable)."""
    part = _read_results(path, [INDEX_COLUMN, "status", "retryable"])
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
