"""Parquet input -> batches of :class:`~runner.types.Record`, ready to send.

A :class:`Source` checks the whole input when it is made, before anything is paid for: every file
opens as Parquet, every column the spec names exists with a usable type, and ids are present and
unique. Then :meth:`Source.records` streams the input one Parquet record batch at a time, reading
only the columns a request or a result row needs, so memory stays bounded by
``[output] read_batch_rows`` however large the input is.

The input (``[job] input``) is one Parquet file or a directory of ``*.parquet`` files. A directory is
read one level deep, in name order; names starting with ``.`` or ``_`` are skipped, as Spark and
pyarrow datasets do (``_SUCCESS``, ``.part.crc``). Paths go through :func:`_open_files`, which hands
URIs to :func:`runner.storage.filesystem_for`, so ``s3://`` (with ``AWS_ENDPOINT_URL_S3`` honoured)
slots in without touching the rest.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Generic, NamedTuple, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from runner.errors import RowError, SourceError
from runner.request import RequestBuilder
from runner.spec import JobSpec
from runner.storage import filesystem_for
from runner.types import Record, RowId


@dataclass(frozen=True, slots=True)
class InputFingerprint:
    """What the job directory remembers of its input, to notice when a resume points at other data.

    ``rows`` counts the input's rows (whatever ``limit`` a run uses); ``ids_digest`` hashes
    their ids in order (with no id column, where ids are row numbers, it hashes the row count);
    ``files`` are the file names relative to the input, so a moved but unchanged input still matches.
    """

    rows: int
    ids_digest: str
    files: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data for the job directory."""
        return {"rows": self.rows, "ids_digest": self.ids_digest, "files": list(self.files)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputFingerprint:
        """The inverse of :meth:`to_dict`; raises ``ValueError`` for data it did not write."""
        rows, digest, files = data.get("rows"), data.get("ids_digest"), data.get("files")
        if (
            not isinstance(rows, int)
            or isinstance(rows, bool)
            or not isinstance(digest, str)
            or not isinstance(files, list)
            or not all(isinstance(f, str) for f in files)
        ):
            raise ValueError(f"not an input fingerprint: {dict(data)!r}")
        return cls(rows=rows, ids_digest=digest, files=tuple(files))


@dataclass(frozen=True, slots=True)
class _InputFile:
    """One Parquet file of the input, as checked at open."""

    path: str  # as its filesystem knows it
    display: str  # as messages show it
    name: str  # relative to the input, for the fingerprint
    rows: int
    keep: list[pa.Field]  # the kept columns' fields, in ``[columns] keep`` order
    id_type: pa.DataType | None  # the id column's value type (None: no id column)


def _open_files(uri: str) -> tuple[pafs.FileSystem, list[tuple[str, str, str]]]:
    """Resolve ``[job] input`` to a filesystem and its Parquet files ``(path, display, name)``.

    Local paths (relative ones against the working directory) use the local filesystem; anything
    with a ``scheme://`` goes to :func:`runner.storage.filesystem_for`, which is where S3 comes in.
    """
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        try:
            fs, root = filesystem_for(uri)
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise SourceError(f"{uri}: cannot open the input ({exc})") from None

        def display(path: str) -> str:
            return f"{scheme}://{path}"
    else:
        fs, root = pafs.LocalFileSystem(), os.path.abspath(uri)
        uri = root  # messages name the absolute path that was tried

        def display(path: str) -> str:
            return path

    try:
        info = fs.get_file_info(root)
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"{uri}: cannot read the input ({exc})") from None
    if info.type == pafs.FileType.NotFound:
        raise SourceError(f"{uri}: no such file or directory ([job] input)")
    if info.type != pafs.FileType.Directory:
        return fs, [(root, display(root), info.base_name)]
    try:
        entries = fs.get_file_info(pafs.FileSelector(root, recursive=False))
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"{uri}: cannot list the input directory ({exc})") from None
    files = sorted(
        (e for e in entries if e.type == pafs.FileType.File and _is_data_file(e.base_name)),
        key=lambda e: e.base_name,
    )
    if not files:
        raise SourceError(f"{uri}: the input directory has no *.parquet files (subdirectories are not read)")
    return fs, [(e.path, display(e.path), e.base_name) for e in files]


def _is_data_file(name: str) -> bool:
    return name.endswith(".parquet") and not name.startswith((".", "_"))


def _value_type(t: pa.DataType) -> pa.DataType:
    """The type of the values a column holds (a dictionary-encoded column: its dictionary's)."""
    return t.value_type if pa.types.is_dictionary(t) else t


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def _is_binary(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_binary_view(t)
    )


def _is_list(t: pa.DataType) -> bool:
    return bool(pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t))


_TYPE_RULES: dict[str, tuple[str, Any]] = {
    # spec key -> (what the message asks for, test on the column's value type); null columns pass
    # (every row then becomes an error row) except for ids, which must all be there.
    "id": ("text or integers", lambda t: _is_text(t) or pa.types.is_integer(t)),
    "prompt": ("text", _is_text),
    "system_column": ("text", _is_text),
    "messages": (
        "JSON text or a list of {role, content} structs",
        lambda t: _is_text(t) or (_is_list(t) and pa.types.is_struct(t.value_type)),
    ),
    "document": ("bytes or a file path", lambda t: _is_text(t) or _is_binary(t)),
}


class Source:
    """The job's input: checked when made, then streamed as :class:`Record` batches.

    ``limit`` restricts what :meth:`records` streams to the first ``limit`` rows; the checks and the
    fingerprint always cover the whole input, so ``--limit 100`` today and a full run tomorrow are the
    same job. Raises :class:`SourceError` naming the file, column and spec key on any problem.
    """

    def __init__(self, spec: JobSpec, *, limit: int | None = None) -> None:
        if limit is not None and limit < 0:
            raise ValueError(f"limit must not be negative, not {limit}")
        self._spec = spec
        self._builder = RequestBuilder(spec)
        cols = spec.columns
        named: list[tuple[str, str]] = [(cols.id, "id")] if cols.id else []
        named += self._builder.columns
        named += [(c, "keep") for c in cols.keep]
        self._named = named
        self._columns = tuple(dict.fromkeys(c for c, _ in named))
        """Every column ``records`` reads, each once."""
        self._fs, found = _open_files(spec.job.input)
        self._files = [self._check_file(path, display, name) for path, display, name in found]
        self._keep_fields = self._check_keep_types()
        self._id_type = _id_type([f.id_type for f in self._files])
        total = sum(f.rows for f in self._files)
        self._rows = total
        self._budget = total if limit is None else min(total, limit)
        self._stamp = self._start_stamp()  # hashes the files while the ids are scanned
        self._fingerprint = self._scan_ids()

    # -- checks at open ---------------------------------------------------------------------------

    def _check_file(self, path: str, display: str, name: str) -> _InputFile:
        try:
            with self._fs.open_input_file(path) as handle:
                meta = pq.ParquetFile(handle)
                schema, rows = meta.schema_arrow, meta.metadata.num_rows
        except pa.ArrowInvalid as exc:
            raise SourceError(f"{display}: not a Parquet file ({exc})") from None
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"{display}: cannot read the input file ({exc})") from None
        available = ", ".join(schema.names)
        for column, key in self._named:
            index = schema.get_field_index(column)
            if index < 0:
                where = f"[columns] `{key}`" if " " not in key else f"[columns] `template` ({key})"
                raise SourceError(
                    f"{display}: no column {column!r}, which {self._spec.source} names in {where} "
                    f"(the file has: {available})"
                )
            rule = _TYPE_RULES.get(key)
            if rule is None:
                continue
            wanted, test = rule
            t = _value_type(schema.field(index).type)
            if not test(t) and not (pa.types.is_null(t) and key != "id"):
                raise SourceError(
                    f"{display}: column {column!r} ([columns] `{key}`) must hold {wanted}, not {t}"
                )
        keep = [schema.field(c) for c in self._spec.columns.keep]
        id_col = self._spec.columns.id
        id_type = _value_type(schema.field(id_col).type) if id_col else None
        return _InputFile(path=path, display=display, name=name, rows=rows, keep=keep, id_type=id_type)

    def _check_keep_types(self) -> list[pa.Field]:
        """The kept columns' fields, the same in every file, as their values come out of ``to_pylist``."""
        first = self._files[0]
        fields = [pa.field(f.name, _value_type(f.type)) for f in first.keep]
        for file in self._files[1:]:
            for field, other in zip(fields, file.keep, strict=True):
                if _value_type(other.type) != field.type:
                    raise SourceError(
                        f"{file.display}: kept column {field.name!r} is {other.type}, but {field.type} "
                        f"in {first.display} ([columns] `keep` needs one type across the input files)"
                    )
        return fields

    def _id_chunks(self) -> Iterator[tuple[int, _InputFile, pa.Array]]:
        """The ids of the job's rows as ``large_string`` arrays: ``(global row, file, ids)`` per batch.

        Integer ids are cast to their decimal text, exactly what ``str`` writes in ``Record.id``.
        """
        seen, rows = 0, self._rows
        for file in self._files:
            if seen >= rows:
                return
            for (column,) in self._read(file, [self._spec.columns.id], rows - seen):
                ids = column.cast(pa.large_string())
                yield seen, file, ids
                seen += len(ids)

    def _scan_ids(self) -> InputFingerprint:
        """Check ids (present, unique) and hash them in order: the one pass over the id column.

        Ids are compared as Arrow text in C. The job's ids are held in memory for the uniqueness
        check only (about 20 bytes each, a million in 20 MB); no other column is read.
        """
        names = tuple(f.name for f in self._files)
        id_col = self._spec.columns.id
        if not id_col:
            digest = hashlib.blake2b(f"rows:{self._rows}".encode(), digest_size=16).hexdigest()
            return InputFingerprint(rows=self._rows, ids_digest=digest, files=names)
        lengths = hashlib.blake2b(digest_size=16)
        data = hashlib.blake2b(digest_size=16)
        chunks: list[pa.Array] = []
        starts: dict[str, int] = {}
        for seen, file, ids in self._id_chunks():
            starts.setdefault(file.display, seen)
            if ids.null_count:
                first = seen + pc.index(pc.is_null(ids), True).as_py()
                raise SourceError(
                    f"{file.display}: id column {id_col!r} is null at row {first - starts[file.display]} "
                    "(ids must be present and unique)"
                )
            try:
                ids.validate(full=True)  # text ids: valid UTF-8 (integers cast to text always are)
            except pa.ArrowInvalid:
                first = seen + _first_invalid_text(ids)
                raise SourceError(
                    f"{file.display}: id column {id_col!r} holds text that is not valid UTF-8 at row "
                    f"{first - starts[file.display]} (ids must be text or integers)"
                ) from None
            _hash_text(lengths, data, ids)
            chunks.append(ids)
        all_ids = pa.chunked_array(chunks, type=pa.large_string())
        if pc.count_distinct(all_ids).as_py() != len(all_ids):
            counts = pc.value_counts(all_ids)
            repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
            first = pc.index(pc.is_in(all_ids, value_set=repeated), True).as_py()
            value = all_ids[first].as_py()
            second = pc.indices_nonzero(pc.equal(all_ids, value))[1].as_py()
            raise SourceError(
                f"id {value!r} in column {id_col!r} appears more than once: "
                f"{self._where(first)} and {self._where(second)} (ids must be unique)"
            )
        digest = hashlib.blake2b(lengths.digest() + data.digest(), digest_size=16).hexdigest()
        return InputFingerprint(rows=self._rows, ids_digest=digest, files=names)

    def _where(self, index: int) -> str:
        """``file row n`` for a global row index."""
        start = 0
        for file in self._files:
            if index < start + file.rows:
                break
            start += file.rows
        return f"{file.display} row {index - start}"

    def _stream_options(self) -> dict[str, Any]:
        """Read a local file as a stream of pages (1 MiB buffer): by default pyarrow loads a whole
        row-group column chunk first, and the stream is faster too (bench/notes.md, "Measurements
        behind the code"). Remote files keep pre-buffering, which coalesces their range reads."""
        if isinstance(self._fs, pafs.LocalFileSystem):
            return {"pre_buffer": False, "buffer_size": 1 << 20}
        return {}

    def _read(self, file: _InputFile, columns: list[str], budget: int) -> Iterator[list[pa.Array]]:
        """The file's columns one record batch at a time, at most ``budget`` rows in all.

        Yields the columns in the order asked (Parquet returns them in file order). I/O and decoding
        errors become :class:`SourceError` naming the file.
        """
        for chunk in self._batches(file, columns, budget):
            if chunk.columns is None:
                raise SourceError(f"{file.display}: cannot read the input file ({chunk.error})")
            yield chunk.columns

    def _batches(
        self,
        file: _InputFile,
        columns: list[str],
        budget: int,
        skip: Callable[[int, int], bool] | None = None,
    ) -> Iterator[_Chunk]:
        """The file's first ``budget`` rows as :class:`_Chunk` s, one record batch each; ``skip(first,
        stop)`` lets the caller pass over whole row groups, unread and undecoded (a resume's done rows).

        A row group that cannot be decoded (a corrupt page) does not stop the file: the rows from the
        first one that failed to the end of its row group come out as one unreadable chunk, and
        reading goes on with the next row group. A file that cannot be opened is a :class:`SourceError`.
        """
        try:
            with self._fs.open_input_file(file.path) as handle:
                parquet = pq.ParquetFile(handle, **self._stream_options())
                starts = list(
                    itertools.accumulate(
                        (
                            parquet.metadata.row_group(g).num_rows
                            for g in range(parquet.metadata.num_row_groups)
                        ),
                        initial=0,
                    )
                )
                for first, groups in _runs(parquet.metadata, budget, skip):
                    yield from self._run_chunks(parquet, starts, first, groups, columns, budget)
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"{file.display}: cannot read the input file ({exc})") from None

    def _run_chunks(
        self,
        parquet: pq.ParquetFile,
        starts: list[int],
        first: int,
        groups: list[int],
        columns: list[str],
        stop: int,
    ) -> Iterator[_Chunk]:
        """The rows ``first..stop`` of consecutive row groups ``groups``, one batch at a time; after a
        decoding error, row group by row group, each unreadable rest one chunk (see :meth:`_batches`)."""
        pos = first
        try:
            for chunk in self._decode(parquet, groups, columns, pos, pos, stop):
                yield chunk
                pos = chunk.first + chunk.rows
            return
        except (OSError, pa.ArrowException):
            pass  # find the row group at fault below, one at a time
        for group in groups:
            group_stop = min(starts[group + 1], stop)
            if group_stop <= pos:
                continue
            try:
                for chunk in self._decode(parquet, [group], columns, starts[group], pos, stop):
                    yield chunk
                    pos = chunk.first + chunk.rows
            except (OSError, pa.ArrowException) as exc:
                yield _Chunk(pos, group_stop - pos, None, f"row group {group}: {exc}")
                pos = group_stop
            if pos >= stop:
                return

    def _decode(
        self, parquet: pq.ParquetFile, groups: list[int], columns: list[str], at: int, skip_to: int, stop: int
    ) -> Iterator[_Chunk]:
        """Decode ``groups`` (which start at file row ``at``) into chunks of the rows ``skip_to..stop``."""
        for batch in parquet.iter_batches(
            batch_size=self._spec.output.read_batch_rows, row_groups=groups, columns=columns
        ):
            start, end = at, at + batch.num_rows
            at = end
            if end <= skip_to:
                continue
            lo, hi = max(start, skip_to), min(end, stop)
            if lo >= hi:
                return
            if lo > start or hi < end:
                batch = batch.slice(lo - start, hi - lo)
            if columns:
                yield _Chunk(lo, hi - lo, [batch.column(c) for c in columns])
            else:  # nothing to read but the row count
                yield _Chunk(lo, hi - lo, [pa.nulls(hi - lo)])
            if hi >= stop:
                return

    # -- the API ----------------------------------------------------------------------------------

    def fingerprint(self) -> InputFingerprint:
        """The input's fingerprint, computed once when the source was opened."""
        return self._fingerprint

    def stamp(self) -> str:
        """Hash of the input files' names and contents, and of the request spec.

        Equal stamps mean the very bytes and spec the done rows were made from, which lets a resume
        skip done rows by position without re-reading them (``records(done_rows=...)``). Local files
        are hashed byte for byte (in a thread started at open, beside the id scan): a size and a
        modification time were trusted before, and ``cp -p``, ``rsync -t`` or a reproducible build
        keep both across an edit. Remote objects (``s3://``) are known by size and modification time,
        which every upload changes.
        """
        return self._stamp.result()

    def _start_stamp(self) -> _Background[str]:
        spec_digest = self._spec.request_digest()
        files = list(self._files)
        fs = self._fs

        def stamp() -> str:
            h = hashlib.blake2b(spec_digest.encode(), digest_size=16)
            if isinstance(fs, pafs.LocalFileSystem):
                for file in files:
                    try:
                        with open(file.path, "rb") as handle:
                            content = hashlib.file_digest(handle, "sha256").hexdigest()
                    except OSError as exc:
                        raise SourceError(f"{file.display}: cannot read the input file ({exc})") from None
                    h.update(f"\x1f{file.name}\x1f{content}".encode())
            else:
                for file, info in zip(files, fs.get_file_info([f.path for f in files]), strict=True):
                    h.update(f"\x1f{file.name}\x1f{info.size}\x1f{info.mtime_ns}".encode())
            return h.hexdigest()

        return _Background(stamp)

    def keep_fields(self) -> list[pa.Field]:
        """Arrow fields of the ``[columns] keep`` columns, for the result schema (dictionaries decoded)."""
        return list(self._keep_fields)

    def id_type(self) -> pa.DataType:
        """The type of the ``id`` result column: the id column's integer type when it holds integers
        (the same in every file, else int64), text otherwise (and for row numbers)."""
        return self._id_type

    def kept_values(self) -> KeptValues:
        """The ``[columns] keep`` columns of the whole input (whatever ``limit``), read forward once,
        for the rebuild of ``results.parquet`` (:meth:`runner.state.JobDir.consolidate`)."""
        return KeptValues(self._kept_batches(), list(self._spec.columns.keep), self._keep_fields)

    def _kept_batches(self) -> Iterator[pa.Table]:
        names = list(self._spec.columns.keep)
        if not names:
            return
        for file in self._files:
            for columns in self._read(file, names, file.rows):
                yield pa.table(
                    {f.name: c.cast(f.type) for f, c in zip(self._keep_fields, columns, strict=True)}
                )

    def ids(self) -> pa.Array:
        """The job's ids in input order, as ``Record.id`` spells them (row numbers with no id column).

        Reads the id column again rather than keeping it since open: only a resume onto a changed
        input (``--force``) needs it.
        """
        if not self._spec.columns.id:
            return pa.array(range(self._rows), pa.int64()).cast(pa.string())
        chunks = [ids.cast(pa.string()) for _, _, ids in self._id_chunks()]
        return pa.concat_arrays(chunks) if chunks else pa.array([], pa.string())

    def records(
        self,
        done: Container[int] = frozenset(),
        *,
        done_rows: Container[int] | None = None,
        answered: Callable[[], Container[int]] | None = None,
    ) -> Iterator[list[Record]]:
        """Stream the input as lists of records, one list per Parquet record batch.

        Rows whose resume key is in ``done`` are skipped (a batch whose rows are all done yields
        nothing). ``done_rows`` is the fast path of a resume onto the very input and request spec
        the done rows were made from: rows at those positions are skipped without reading or
        hashing them, and row groups wholly done are not even decoded. A row that cannot become a
        request still comes out, with ``body=None`` and its ``error_type``, so that it becomes an
        error result row: text that is not valid UTF-8 (``InvalidText``), and rows of a row group
        that cannot be decoded (``UnreadableInput``; their ids are read again from the id column,
        which was read whole at open). ``answered()``, asked only when such a row group turns up,
        gives the positions that already have a result, which an unreadable row does not replace. A
        sync generator: the pool runs it in a worker thread, and it holds one batch at a time.
        """
        names = self._columns
        read = list(names)
        index = 0
        budget = self._budget
        answered_rows: list[Container[int]] = []

        def already_answered() -> Container[int]:
            if not answered_rows:
                answered_rows.append(answered() if answered is not None else frozenset())
            return answered_rows[0]

        for file in self._files:
            if index >= budget:
                return
            base = index
            skip = None
            if done_rows is not None:
                skip = _all_in(done_rows, base)
            for chunk in self._batches(file, read, budget - base, skip):
                index = base + chunk.first
                n = chunk.rows
                if done_rows is not None and all(i in done_rows for i in range(index, index + n)):
                    continue
                if chunk.columns is None:
                    out = self._unreadable(file, chunk, base, done, done_rows, already_answered())
                else:
                    out = self._build(chunk.columns, index, done, done_rows)
                if out:
                    yield out
            index = base + min(file.rows, budget - base)

    def _build(
        self, columns: list[pa.Array], index: int, done: Container[int], done_rows: Container[int] | None
    ) -> list[Record]:
        """The records of one batch of rows starting at input row ``index`` (see :meth:`records`)."""
        key_of, build = self._builder.key, self._builder.build
        names = self._columns
        id_col = self._spec.columns.id
        keep = tuple(self._spec.columns.keep)
        n = len(columns[0])
        # One to_pylist per column, then zip: far cheaper than RecordBatch.to_pylist().
        rows: Iterable[dict[str, Any]]
        bad: dict[int, str] = {}
        if names:
            values = [_pylist(c, name, bad) for name, c in zip(names, columns, strict=True)]
            rows = (dict(zip(names, v, strict=True)) for v in zip(*values, strict=True))
        else:
            rows = repeat({}, n)
        first = index
        out: list[Record] = []
        for row in rows:
            if done_rows is not None and index in done_rows:
                index += 1
                continue
            # The key hashes the id's text, whatever its type: resume keys stay the same.
            row_id: RowId = row[id_col] if id_col else str(index)
            key = key_of(str(row_id), row)
            if key in done:
                index += 1
                continue
            kept = {k: row[k] for k in keep}
            try:
                if bad and index - first in bad:
                    raise RowError(
                        f"column {bad[index - first]!r} holds text that is not valid UTF-8",
                        error_type="InvalidText",
                    )
                built = build(row)
            except RowError as exc:
                out.append(_error_record(index, row_id, key, exc, kept))
            else:
                out.append(
                    Record(
                        index=index,
                        id=row_id,
                        key=key,
                        body=built.body,
                        max_tokens=built.max_tokens,
                        estimated_input_tokens=built.estimated_input_tokens,
                        keep=kept,
                    )
                )
            index += 1
        return out

    def _unreadable(
        self,
        file: _InputFile,
        chunk: _Chunk,
        base: int,
        done: Container[int],
        done_rows: Container[int] | None,
        answered: Container[int],
    ) -> list[Record]:
        """Error records (``UnreadableInput``) for rows of a row group that cannot be decoded; rows that
        already have a result keep it."""
        id_col = self._spec.columns.id
        if id_col:
            ids = [str(v) for v in self._ids_between(file, chunk.first, chunk.first + chunk.rows)]
        else:
            ids = [str(base + chunk.first + i) for i in range(chunk.rows)]
        row: dict[str, Any] = dict.fromkeys(self._columns)
        kept: dict[str, Any] = dict.fromkeys(self._spec.columns.keep)
        error = RowError(
            f"{file.display}: {chunk.error[:300]}; this row cannot be read (fix or replace the file and "
            "rerun: the rest of the input ran)",
            error_type="UnreadableInput",
        )
        out: list[Record] = []
        for offset, row_id in enumerate(ids):
            index = base + chunk.first + offset
            if (done_rows is not None and index in done_rows) or index in answered:
                continue
            key = self._builder.key(row_id, row)
            if key in done:
                continue
            out.append(_error_record(index, row_id, key, error, dict(kept)))
        return out

    def _ids_between(self, file: _InputFile, first: int, stop: int) -> list[Any]:
        """The ids of rows ``first..stop`` of ``file``, read from the row groups that hold them alone."""
        id_col = self._spec.columns.id
        out: list[Any] = []
        try:
            with self._fs.open_input_file(file.path) as handle:
                parquet = pq.ParquetFile(handle, **self._stream_options())
                meta = parquet.metadata
                at = 0
                for group in range(meta.num_row_groups):
                    size = meta.row_group(group).num_rows
                    if at + size > first and at < stop:
                        for chunk in self._decode(parquet, [group], [id_col], at, first, stop):
                            out.extend(chunk.columns[0].to_pylist() if chunk.columns else [])
                    at += size
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"{file.display}: cannot read the input file ({exc})") from None
        return out


def _pylist(column: pa.Array, name: str, bad: dict[int, str]) -> list[Any]:
    """``column.to_pylist()``; a value that is not valid UTF-8 becomes ``None`` and its row is noted in
    ``bad`` (row -> column name) instead of failing the whole batch."""
    try:
        fast: list[Any] = column.to_pylist()
        return fast
    except UnicodeDecodeError:
        pass
    values: list[Any] = []
    for i in range(len(column)):
        try:
            values.append(column[i].as_py())
        except UnicodeDecodeError:
            values.append(None)
            bad.setdefault(i, name)
    return values


def _first_invalid_text(texts: pa.Array) -> int:
    """The position of the first value of a text array that is not valid UTF-8 (the slow way: only
    after ``validate`` said there is one)."""
    for i, value in enumerate(texts.cast(pa.large_binary()).to_pylist()):
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return i
    return 0


def _error_record(index: int, row_id: RowId, key: int, exc: RowError, kept: dict[str, Any]) -> Record:
    """The record of a row that cannot become a request: it becomes an error row, never a call."""
    return Record(
        index=index,
        id=row_id,
        key=key,
        body=None,
        max_tokens=0,
        estimated_input_tokens=0,
        error_type=exc.error_type,
        error_message=str(exc),
        keep=kept,
    )


T = TypeVar("T")


class _Background(Generic[T]):
    """``fn()`` run in a daemon thread from the start; :meth:`result` waits for it (and re-raises)."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._value: T | None = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._value = fn()
            except BaseException as exc:  # handed to whoever asks for the result
                self._error = exc

        self._thread = threading.Thread(target=run, name="source-stamp", daemon=True)
        self._thread.start()

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


class _Chunk(NamedTuple):
    """Rows ``first..first + rows`` of one input file: their columns, or ``None`` and why they cannot
    be read (a corrupt page in their row group)."""

    first: int
    rows: int
    columns: list[pa.Array] | None
    error: str = ""


class KeptValues:
    """Kept input columns by input position, read forward: memory is one input batch, not the input.

    :meth:`take` must be asked for ascending positions, call after call (the rebuild of
    ``results.parquet`` goes in input order). A position past the end of the input is null.
    """

    def __init__(self, batches: Iterator[pa.Table], names: list[str], fields: list[pa.Field]) -> None:
        self.names = names
        self._fields = fields
        self._batches = batches
        self._start = 0
        self._batch: pa.Table | None = None

    def _advance(self) -> bool:
        if self._batch is not None:
            self._start += self._batch.num_rows
        self._batch = next(self._batches, None)
        return self._batch is not None

    def take(self, positions: Sequence[int]) -> pa.Table:
        pieces: list[pa.Table] = []
        i = 0
        while i < len(positions):
            while self._batch is None or positions[i] >= self._start + self._batch.num_rows:
                if not self._advance():
                    rest = len(positions) - i
                    pieces.append(pa.table({f.name: pa.nulls(rest, f.type) for f in self._fields}))
                    return pa.concat_tables(pieces)
            end = self._start + self._batch.num_rows
            j = i
            while j < len(positions) and positions[j] < end:
                j += 1
            offsets = pa.array([p - self._start for p in positions[i:j]], pa.int64())
            pieces.append(self._batch.take(offsets))
            i = j
        if not pieces:
            return pa.table({f.name: pa.array([], f.type) for f in self._fields})
        return pa.concat_tables(pieces)


def _id_type(types: list[pa.DataType | None]) -> pa.DataType:
    """The ``id`` column's type for the id columns of the input's files (see :meth:`Source.id_type`)."""
    found = [t for t in types if t is not None and not pa.types.is_null(t)]
    if not found or not all(pa.types.is_integer(t) for t in found):
        return pa.string()
    first = found[0]
    return first if all(t == first for t in found) else pa.int64()


def _runs(
    meta: pq.FileMetaData, budget: int, skip: Callable[[int, int], bool] | None
) -> Iterator[tuple[int, list[int]]]:
    """Runs of consecutive row groups to read, with the first row of each run; skipped groups
    split runs. Batches stay ``read_batch_rows`` long within a run, across its row groups."""
    first, run_first = 0, 0
    run: list[int] = []
    for group in range(meta.num_row_groups):
        if first >= budget:
            break
        size = min(meta.row_group(group).num_rows, budget - first)
        if skip is not None and skip(first, first + size):
            if run:
                yield run_first, run
            run = []
        else:
            if not run:
                run_first = first
            run.append(group)
        first += size
    if run:
        yield run_first, run


def _all_in(done_rows: Container[int], base: int) -> Callable[[int, int], bool]:
    """``skip(first, stop)`` for a file starting at input row ``base``: every row in it is done."""

    def skip(first: int, stop: int) -> bool:
        return all(i in done_rows for i in range(base + first, base + stop))

    return skip


def _hash_text(lengths: hashlib.blake2b, data: hashlib.blake2b, ids: pa.Array) -> None:
    """Feed a null-free ``large_string`` array into two running hashes: value lengths and bytes.

    Hashing the lengths and the concatenated bytes separately makes the result independent of how
    the ids were chunked into batches, and unambiguous (``"ab","c"`` differs from ``"a","bc"``),
    without a Python-level loop over a million ids.
    """
    n = len(ids)
    if not n:
        return
    _, offsets_buf, data_buf = ids.buffers()
    if data_buf is not None:
        offsets = memoryview(offsets_buf)[: (ids.offset + n + 1) * 8].cast("q")
        start, end = offsets[ids.offset], offsets[ids.offset + n]
        data.update(memoryview(data_buf)[start:end])  # all-empty ids may come without a data buffer
    widths = pc.binary_length(ids)
    lengths.update(memoryview(widths.buffers()[1])[widths.offset * 8 : (widths.offset + n) * 8])
