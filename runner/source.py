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
import os
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from runner.errors import RowError, SourceError
from runner.request import RequestBuilder
from runner.spec import JobSpec
from runner.storage import filesystem_for
from runner.types import Record


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
        total = sum(f.rows for f in self._files)
        self._rows = total
        self._budget = total if limit is None else min(total, limit)
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
        return _InputFile(path=path, display=display, name=name, rows=rows, keep=keep)

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
        for _, batch in self._batches(file, columns, budget):
            yield batch

    def _batches(
        self,
        file: _InputFile,
        columns: list[str],
        budget: int,
        skip: Callable[[int, int], bool] | None = None,
    ) -> Iterator[tuple[int, list[pa.Array]]]:
        """Like :meth:`_read`, with each batch's first row (in the file); ``skip(first, stop)`` lets
        the caller pass over whole row groups, unread and undecoded (a resume's done rows)."""
        batch_rows = self._spec.output.read_batch_rows
        try:
            with self._fs.open_input_file(file.path) as handle:
                parquet = pq.ParquetFile(handle, **self._stream_options())
                for first, groups in _runs(parquet.metadata, budget, skip):
                    for batch in parquet.iter_batches(
                        batch_size=batch_rows, row_groups=groups, columns=columns
                    ):
                        if batch.num_rows > budget:
                            batch = batch.slice(0, budget)
                        budget -= batch.num_rows
                        if columns:
                            yield first, [batch.column(c) for c in columns]
                        else:  # nothing to read but the row count
                            yield first, [pa.nulls(batch.num_rows)]
                        first += batch.num_rows
                        if budget <= 0:
                            return
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"{file.display}: cannot read the input file ({exc})") from None

    # -- the API ----------------------------------------------------------------------------------

    def fingerprint(self) -> InputFingerprint:
        """The input's fingerprint, computed once when the source was opened."""
        return self._fingerprint

    def stamp(self) -> str:
        """Hash of the input files' names, sizes and modification times, and of the request spec.

        Equal stamps mean the very bytes and spec the done rows were made from, which lets a resume
        skip done rows by position without re-reading them (``records(done_rows=...)``).
        """
        h = hashlib.blake2b(self._spec.request_digest().encode(), digest_size=16)
        for file, info in zip(
            self._files, self._fs.get_file_info([f.path for f in self._files]), strict=True
        ):
            h.update(f"\x1f{file.name}\x1f{info.size}\x1f{info.mtime_ns}".encode())
        return h.hexdigest()

    def keep_fields(self) -> list[pa.Field]:
        """Arrow fields of the ``[columns] keep`` columns, for the result schema (dictionaries decoded)."""
        return list(self._keep_fields)

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
        self, done: Container[int] = frozenset(), *, done_rows: Container[int] | None = None
    ) -> Iterator[list[Record]]:
        """Stream the input as lists of records, one list per Parquet record batch.

        Rows whose resume key is in ``done`` are skipped (a batch whose rows are all done yields
        nothing). ``done_rows`` is the fast path of a resume onto the very input and request spec
        the done rows were made from: rows at those positions are skipped without reading or
        hashing them, and row groups wholly done are not even decoded. A row that cannot become a
        request still comes out, with ``body=None`` and its ``error_type``, so that it becomes an
        error result row. A sync generator: the pool runs it in a worker thread, and it holds one
        batch at a time.
        """
        builder = self._builder
        key_of, build = builder.key, builder.build
        names = self._columns
        id_col = self._spec.columns.id
        keep = tuple(self._spec.columns.keep)
        read = list(names)
        index = 0
        budget = self._budget
        for file in self._files:
            if index >= budget:
                return
            base = index
            skip = None
            if done_rows is not None:
                skip = _all_in(done_rows, base)
            for first, columns in self._batches(file, read, budget - base, skip):
                index = base + first
                n = len(columns[0])
                if done_rows is not None and all(i in done_rows for i in range(index, index + n)):
                    index += n
                    continue
                # One to_pylist per column, then zip: far cheaper than RecordBatch.to_pylist().
                rows: Iterable[dict[str, Any]]
                if names:
                    values = [c.to_pylist() for c in columns]
                    rows = (dict(zip(names, v, strict=True)) for v in zip(*values, strict=True))
                else:
                    rows = repeat({}, n)
                out: list[Record] = []
                for row in rows:
                    if done_rows is not None and index in done_rows:
                        index += 1
                        continue
                    row_id = str(row[id_col]) if id_col else str(index)
                    key = key_of(row_id, row)
                    if key in done:
                        index += 1
                        continue
                    kept = {k: row[k] for k in keep}
                    try:
                        built = build(row)
                    except RowError as exc:
                        out.append(
                            Record(
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
                        )
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
                if out:
                    yield out
            index = base + min(file.rows, budget - base)


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
