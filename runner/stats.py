"""Usage statistics of a job directory: rows, tokens, cost per route, latency, errors, throughput.

Stats read what the runner wrote, never what it holds in memory, so ``stats DIR`` works the same on a
finished job, a running one and one that was killed. The job directory (its layout is
:class:`runner.state.JobDir`'s):

- ``_job/parts/part-NNNNN.parquet``: result rows committed atomically while the job runs (RESULT_SCHEMA,
  the input position ``_index``, kept input columns); a row may appear in several parts (a failed row
  rerun on resume), and the highest part number wins;
- ``results.parquet``: rebuilt from the parts when a run ends, one row per input row with an outcome;
- ``_job/state.json``: at least ``{"input": {"rows": N}}``, the input size, so pending can be counted.

Parts are the truth, so stats read them and keep, per input position (per id where a file lacks
``_index``), the row written last (:class:`runner.state.NewestRows`, the engine's own reader of that
rule); ``results.parquet`` is read when there are no parts, or when it was rebuilt from exactly the
parts there are (then its kept columns hold the input's current values). Rows still in the engine's
write-ahead journal (at most ``part_seconds`` old) are not counted yet.

One streaming pass: a first look at the key column alone finds the newest row of each key, then the
files are read in batches of the columns the figures need (completions stay on disk), each batch is
reduced with pyarrow compute and ``Table.group_by`` to partial sums, and the partial sums are merged.
No Python loop runs over rows, and memory is one batch plus a few bytes per row (the key, and the ok
rows' latencies for the percentiles; bench/notes.md, "Measurements behind the code").

Cost is what the engine recorded per row (``cost_usd``, priced with the route that served it), under the
table named in the rows' ``price_table`` column. With ``prices=`` the rows are re-priced from their
tokens with that table instead, and the stats say so (``repriced``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from runner import __version__
from runner.errors import SpecError, StateError
from runner.pricing import LANES, PriceTable
from runner.schemas import INDEX_COLUMN, RESULT_SCHEMA
from runner.state import JobDir, NewestRows, part_files
from runner.types import TOKEN_FIELDS, Usage

STATS_COLUMNS: tuple[str, ...] = (
    "id",
    "status",
    *TOKEN_FIELDS,
    "model_id",
    "region",
    "attempts",
    "latency_ms",
    "error_type",
    "cost_usd",
    "stop_reason",
    "price_table",
    "lane",
    "started_at",
    "finished_at",
)
"""The columns the figures are made of; text columns (completion, error_message) are never read."""

NULL_KEY = "(null)"
"""How a null value of a ``--by`` column (or a null error type) is named in the output."""

QUANTILES: tuple[float, ...] = (0.5, 0.95, 0.99)

BATCH_ROWS = 65_536
"""Rows summarised at a time: memory is one batch, not the job (a consolidated results.parquet can
hold millions of rows)."""
BY_COLUMN = "__by"
"""Name of the ``--by`` column in :func:`prepare`'s table (the user's name may clash with ours)."""
_READ_ATTEMPTS = 3


# -- values ------------------------------------------------------------------------------------------


def tokens_dict(tokens: Usage) -> dict[str, int]:
    """Token counts as ``stats --json`` shows them per route and group (short keys)."""
    return {
        "input": tokens.input_tokens,
        "output": tokens.output_tokens,
        "cache_read": tokens.cache_read_input_tokens,
        "cache_creation": tokens.cache_creation_input_tokens,
    }


@dataclass(frozen=True, slots=True)
class Tally:
    """The figures of one slice of the rows: a route, a lane, or one value of the ``--by`` column."""

    rows: int
    ok: int
    failed: int
    tokens: Usage
    cost_usd: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "ok": self.ok,
            "failed": self.failed,
            "tokens": tokens_dict(self.tokens),
            "cost_usd": self.cost_usd,
        }


@dataclass(frozen=True, slots=True)
class Latency:
    """Latency of ``ok`` rows in milliseconds (error rows would mix timeouts into the tail)."""

    count: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    mean: float | None = None
    max: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "p50": self.p50,
            "p95": self.p95,
            "p99": self.p99,
            "mean": self.mean,
            "max": self.max,
        }


FIT_QUANTILE = 0.999
"""Share of answers a suggested ``max_tokens`` keeps whole."""


@dataclass(frozen=True, slots=True)
class OutputFit:
    """How well one route's ``max_tokens`` fitted its answers, in quota terms.

    Bedrock reserves ``max_tokens`` against the tokens-per-minute quota when a request starts; the
    part of it an answer did not use held quota back for the request's whole duration. A
    ``max_tokens`` far above the answers is the commonest way a job throttles itself.
    """

    max_tokens: int | None
    """The job's ``[request] max_tokens`` (``None``: the job directory does not say)."""
    answers: int
    reserved_unused: int
    """Output tokens reserved and never produced: the sum of ``max_tokens - output_tokens``."""
    output_p999: int | None
    """The output length that 99.9 % of answers stayed within."""
    cut_off: int
    """Answers that stopped at ``max_tokens`` (``stop_reason = max_tokens``)."""

    @property
    def suggested_max_tokens(self) -> int | None:
        """What would have kept 99.9 % of the answers whole: their 99.9th percentile, or (when
        more than 0.1 % were cut off) more than today's ``max_tokens``, which cannot be told."""
        if self.output_p999 is None:
            return None
        if self.max_tokens is not None and self.cut_off > (1 - FIT_QUANTILE) * self.answers:
            return None
        return self.output_p999

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens,
            "answers": self.answers,
            "reserved_unused_tokens": self.reserved_unused,
            "output_tokens_p99_9": self.output_p999,
            "cut_off_at_max_tokens": self.cut_off,
            "suggested_max_tokens": self.suggested_max_tokens,
        }


@dataclass(frozen=True, slots=True)
class Throughput:
    """Rows and tokens per unit of wall time, from the first start to the last finish."""

    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    rows: int = 0
    tokens: int = 0

    @property
    def elapsed_s(self) -> float:
        if self.started_at is None or self.finished_at is None:
            return 0.0
        return max((self.finished_at - self.started_at).total_seconds(), 0.0)

    @property
    def rows_per_second(self) -> float | None:
        return self.rows / self.elapsed_s if self.elapsed_s > 0 else None

    @property
    def tokens_per_minute(self) -> float | None:
        return self.tokens * 60.0 / self.elapsed_s if self.elapsed_s > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "elapsed_s": self.elapsed_s,
            "rows": self.rows,
            "tokens": self.tokens,
            "rows_per_second": self.rows_per_second,
            "tokens_per_minute": self.tokens_per_minute,
        }


@dataclass(frozen=True, slots=True)
class JobStats:
    """Everything ``stats`` reports about a job; :meth:`to_dict` is the ``stats --json`` contract."""

    job_dir: str
    rows: int
    """Input rows: ok + failed + pending."""
    ok: int
    failed: int
    pending: int
    tokens: Usage
    cost_usd: float
    price_table: str | None
    """The table that priced ``cost_usd``: from the rows, or the ``prices=`` table when re-priced."""
    repriced: bool
    routes: Mapping[str, Tally]
    """Keyed ``model_id@region``: the inference profile and the region that served the rows."""
    unrouted: int
    """Rows that never reached a route (bad rows, rows failed before any call)."""
    latency_ms: Latency
    retries: int
    """Attempts beyond the first, over all rows."""
    errors: Mapping[str, int]
    throughput: Throughput
    lanes: Mapping[str, int]
    read_from: str
    """Which files the figures come from (``N part files``, ``results.parquet``)."""
    by: str | None = None
    groups: Mapping[str, Tally] | None = None
    output_fit: Mapping[str, OutputFit] = field(default_factory=dict)
    """Per route: the reservation ``max_tokens`` held and the answers did not use."""

    @property
    def complete(self) -> bool:
        """Every input row has an outcome, ok or error (as ``state.Progress.complete``, ``status``'s)."""
        return self.pending == 0

    def to_dict(self) -> dict[str, Any]:
        """The ``stats --json`` object: DESIGN.md keys first, then the rest; JSON-safe values only."""
        out: dict[str, Any] = {
            "version": __version__,
            "rows": self.rows,
            "ok": self.ok,
            "failed": self.failed,
            "pending": self.pending,
            "input_tokens": self.tokens.input_tokens,
            "output_tokens": self.tokens.output_tokens,
            "cache_read_input_tokens": self.tokens.cache_read_input_tokens,
            "cache_creation_input_tokens": self.tokens.cache_creation_input_tokens,
            "total_tokens": self.tokens.total,
            "cost_usd": self.cost_usd,
            "price_table": self.price_table,
            "repriced": self.repriced,
            "routes": {name: tally.to_dict() for name, tally in self.routes.items()},
            "unrouted": self.unrouted,
            "latency_ms": self.latency_ms.to_dict(),
            "retries": self.retries,
            "errors": dict(self.errors),
            "throughput": self.throughput.to_dict(),
            "lanes": dict(self.lanes),
            "complete": self.complete,
            "job_dir": self.job_dir,
            "read_from": self.read_from,
        }
        out["regions"] = self.region_shares()
        out["output_fit"] = {name: fit.to_dict() for name, fit in self.output_fit.items()}
        if self.by is not None:
            out["by"] = self.by
            out["groups"] = {k: v.to_dict() for k, v in (self.groups or {}).items()}
        return out

    def region_shares(self) -> dict[str, dict[str, Any]]:
        """Per source region: the rows its routes served and their share (each region is a quota)."""
        rows: dict[str, int] = {}
        for name, tally in self.routes.items():
            region = name.rpartition("@")[2]
            rows[region] = rows.get(region, 0) + tally.rows
        total = sum(rows.values())
        return {
            region: {"rows": n, "share": round(n / total, 4) if total else 0.0}
            for region, n in sorted(rows.items())
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)


@dataclass(frozen=True, slots=True)
class Collected:
    """What one pass over a job yields: the stats, and the per-row series the HTML report draws.

    The series are compact (8 or 16 bytes per row, numbers only): the report bins them itself.
    """

    stats: JobStats
    latencies: pa.Array
    """``latency_ms`` of ok rows (float64)."""
    timeline: pa.Table
    """``finished_ms`` (int64, epoch milliseconds) and ``tokens`` (int64) of rows that have a finish time."""


@dataclass(frozen=True, slots=True)
class JobFiles:
    """The result files of a job directory and what is known before reading their rows."""

    job_dir: Path
    files: tuple[Path, ...]
    schemas: tuple[pa.Schema, ...]
    key: str
    """Column that identifies a row across files: ``_index`` (input position) or ``id``."""
    columns: tuple[str, ...]
    """Every column the result files have, bar the engine's own: what ``--by`` may name."""
    input_rows: int | None
    """From ``_job/state.json``; None when the directory has no state (results only)."""
    read_from: str
    max_tokens: int | None = None
    """The job's ``[request] max_tokens`` from ``_job/spec.json`` (None without it)."""
    unique: bool = False
    """Every key appears once (``results.parquet`` rebuilt from the current parts): no newest-row pass."""


# -- reading -----------------------------------------------------------------------------------------


def is_job_dir(path: Path) -> bool:
    """Whether ``path`` looks like a job directory: results, or the runner's working directory."""
    job = JobDir(path)
    return path.is_dir() and (job.results.is_file() or job.work.is_dir())


def open_job(job_dir: Path) -> JobFiles:
    """List a job's result files: the parts when there are any, else ``results.parquet``.

    Parts are the truth while a job runs and after it ends (the engine rebuilds results.parquet
    from them); results.parquet alone is a finished job whose working files were removed. When
    ``results.parquet`` was rebuilt from exactly the parts there are (:meth:`JobDir.results_current`)
    it is read instead: the same rows, one per input row, with the kept columns' current values
    (a ``team`` changed in the input since a row ran is grouped under its new value).
    Raises :class:`StateError` when ``job_dir`` is not a job directory or a file is unreadable.
    """
    job_dir = Path(job_dir)
    layout = JobDir(job_dir)
    if not is_job_dir(job_dir):
        raise StateError(
            f"{job_dir}: not a job directory (no {layout.results.name} and no {layout.work.name}/)"
        )
    parts = part_files(layout.parts)
    results = layout.results
    current = bool(parts) and layout.results_current()
    if current:  # the same rows as the parts, with the kept columns' current values
        parts = []
    files = tuple(parts) or ((results,) if results.is_file() else ())
    schemas = tuple(_schema(path) for path in files)
    names: dict[str, None] = {}
    for schema in schemas:
        names.update(dict.fromkeys(schema.names))
    # Same key as the engine: the input position when every file has it, else the row id.
    key = INDEX_COLUMN if schemas and all(INDEX_COLUMN in s.names for s in schemas) else "id"
    if parts:
        read_from = f"{len(parts)} part file{'s' if len(parts) != 1 else ''}"
    else:
        read_from = results.name if files else "nothing yet"

    return JobFiles(
        job_dir=job_dir,
        files=files,
        schemas=schemas,
        key=key,
        columns=tuple(n for n in names if n != INDEX_COLUMN),
        input_rows=_input_rows(layout.state_file),
        read_from=read_from,
        max_tokens=_max_tokens(layout.spec_file),
        unique=current,
    )


def iter_rows(job: JobFiles, columns: Sequence[str]) -> Iterator[pa.Table]:
    """The job's rows in batches of at most ``BATCH_ROWS``, newest row per key only, with ``columns``
    (nulls of the contract's type where a file lacks one). Memory: one batch plus a few bytes per row."""
    newest: NewestRows | None = None
    if not job.unique:
        try:
            newest = NewestRows.scan(job.files, read=_read_columns, key=job.key)
        except pa.ArrowException as exc:
            raise StateError(
                f"{job.job_dir}: result files disagree on the {job.key} column ({exc})"
            ) from None
    for number, (path, schema) in enumerate(zip(job.files, job.schemas, strict=True)):
        present = [c for c in dict.fromkeys([*columns, job.key]) if c in schema.names]
        offset = 0
        try:
            batches = pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=present)
            for batch in batches:
                table = pa.Table.from_batches([batch])
                mask = None if newest is None else newest.mask(number, table.column(job.key), offset)
                if mask is not None:
                    table = table.filter(mask)
                offset += batch.num_rows
                for name in columns:
                    if name not in schema.names:
                        table = table.append_column(name, pa.nulls(table.num_rows, _contract_type(name)))
                yield table.select(list(columns))
        except FileNotFoundError:
            raise
        except (pa.ArrowException, OSError) as exc:
            raise StateError(f"{path}: not a readable Parquet file ({exc})") from None


def _read_columns(path: Path, columns: list[str]) -> pa.Table:
    """Some columns of one result file; a file gone meanwhile (an atomic rename) is ``FileNotFoundError``."""
    try:  # ParquetFile, not pq.read_table: no dataset scan to set up (nor pyarrow.dataset to import)
        with pq.ParquetFile(path) as parquet:
            return parquet.read(columns=columns, use_threads=False)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise StateError(f"{path}: not a readable Parquet file ({exc})") from None


def _schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise StateError(f"{path}: not a readable Parquet file ({exc})") from None


def _contract_type(name: str) -> pa.DataType:
    index = RESULT_SCHEMA.get_field_index(name)
    return RESULT_SCHEMA.field(index).type if index >= 0 else pa.null()


def _max_tokens(path: Path) -> int | None:
    """``[request] max_tokens`` of the frozen spec, when the job directory has one."""
    try:
        value = json.loads(path.read_text())["request"]["max_tokens"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _input_rows(path: Path) -> int | None:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateError(f"{path}: unreadable job state ({exc})") from None
    rows = state.get("input", {}).get("rows") if isinstance(state, dict) else None
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
        return None
    return rows


# -- figures -----------------------------------------------------------------------------------------


def compute_stats(job_dir: Path, *, by: str | None = None, prices: PriceTable | None = None) -> JobStats:
    """Read ``job_dir`` and summarise it; ``by`` groups by a column, ``prices`` re-prices the rows.

    Raises :class:`StateError` (not a job, unreadable file) or :class:`SpecError` (unknown ``by``
    column, a model the ``prices`` table cannot price).
    """
    return collect(job_dir, by=by, prices=prices).stats


def collect(job_dir: Path, *, by: str | None = None, prices: PriceTable | None = None) -> Collected:
    """One streaming pass over the job: the stats plus the series the HTML report needs.

    Each batch is reduced to partial sums (mergeable counters); only the ok rows' latencies and the
    (finish time, tokens) pairs are kept whole. A file the engine replaces while we read it (its
    atomic rename) makes us list the directory again.
    """
    for attempt in range(_READ_ATTEMPTS):
        try:
            return _collect_once(Path(job_dir), by, prices)
        except FileNotFoundError:
            if attempt == _READ_ATTEMPTS - 1:
                raise StateError(f"{job_dir}: result files kept changing while being read") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _collect_once(job_dir: Path, by: str | None, prices: PriceTable | None) -> Collected:
    job = open_job(job_dir)
    if by is not None and by not in job.columns:
        raise SpecError(f"{job_dir}: no column {by!r} in the results; available: {', '.join(job.columns)}")
    columns = list(dict.fromkeys((*STATS_COLUMNS, *((by,) if by else ()))))
    acc = _Accumulator()
    for table in iter_rows(job, columns):
        acc.add(table, prepare(table, prices=prices, by=by), by=by)

    totals = acc.totals.tally()
    pending = max(job.input_rows - totals.rows, 0) if job.input_rows is not None else 0
    latencies = pa.concat_arrays(acc.latencies) if acc.latencies else pa.array([], pa.float64())
    timeline = (
        pa.concat_tables(acc.timeline)
        if acc.timeline
        else pa.table({"finished_ms": pa.array([], pa.int64()), "tokens": pa.array([], pa.int64())})
    )
    routes = {name: acc.routes[name].tally() for name in sorted(acc.routes)}
    stats = JobStats(
        job_dir=str(job_dir),
        rows=totals.rows + pending,
        ok=totals.ok,
        failed=totals.failed,
        pending=pending,
        tokens=totals.tokens,
        cost_usd=totals.cost_usd,
        price_table=prices.name if prices is not None else (", ".join(sorted(acc.price_tables)) or None),
        repriced=prices is not None,
        routes=routes,
        unrouted=totals.rows - sum(r.rows for r in routes.values()),
        latency_ms=_latency(latencies),
        retries=acc.retries,
        errors=dict(sorted(acc.errors.items(), key=lambda kv: (-kv[1], kv[0]))),
        throughput=acc.throughput(),
        lanes={**dict.fromkeys(LANES, 0), **acc.lanes},
        read_from=job.read_from,
        by=by,
        groups={name: acc.groups[name].tally() for name in sorted(acc.groups)} if by is not None else None,
        output_fit=acc.output_fit(job.max_tokens),
    )
    return Collected(stats=stats, latencies=latencies, timeline=timeline)


def prepare(table: pa.Table, *, prices: PriceTable | None = None, by: str | None = None) -> pa.Table:
    """The rows with the derived columns every figure uses: ``ok``/``failed`` as 0/1, ``route``,
    ``cost`` (recorded or re-priced), nulls filled so sums need no special cases, and the ``by``
    column as ``BY_COLUMN`` (the user's column name may clash with ours)."""
    table = table.combine_chunks()
    status = table["status"].combine_chunks()
    tokens = {c: pc.fill_null(table[c].combine_chunks(), 0).cast(pa.int64()) for c in TOKEN_FIELDS}
    lane = pc.fill_null(table["lane"].combine_chunks(), "on_demand")
    if prices is not None:
        cost = _reprice(table, tokens, lane, prices)
    else:
        cost = pc.fill_null(table["cost_usd"].combine_chunks(), 0.0).cast(pa.float64())
    route = pc.binary_join_element_wise(
        table["model_id"].combine_chunks(),
        pc.fill_null(table["region"].combine_chunks(), "-"),
        "@",
        null_handling="emit_null",
    )
    columns: dict[str, Any] = {
        "ok": pc.equal(status, "ok").cast(pa.int64()),
        "failed": pc.equal(status, "error").cast(pa.int64()),
        **tokens,
        "cost": cost,
        "route": route,
        "lane": lane,
        "attempts": pc.fill_null(table["attempts"].combine_chunks(), 0).cast(pa.int64()),
        "latency_ms": table["latency_ms"].combine_chunks().cast(pa.float64()),
        "error_type": table["error_type"].combine_chunks(),
        "stop_reason": table["stop_reason"].combine_chunks(),
        "started_at": table["started_at"].combine_chunks(),
        "finished_at": table["finished_at"].combine_chunks(),
    }
    if by is not None:
        columns[BY_COLUMN] = table[by].combine_chunks()
    return pa.table(columns)


def _reprice(table: pa.Table, tokens: Mapping[str, pa.Array], lane: pa.Array, prices: PriceTable) -> pa.Array:
    """Cost per row from its tokens with ``prices``: one rate look-up per distinct (model, lane), the
    long-context rates for rows whose input went over the table's threshold."""
    key = pc.binary_join_element_wise(
        table["model_id"].combine_chunks(), lane, "\x00", null_handling="emit_null"
    )
    encoded = key.dictionary_encode()
    pairs = [
        (m, lane_name) for m, _, lane_name in (v.partition("\x00") for v in encoded.dictionary.to_pylist())
    ]
    rates = [prices.rates(model_id, lane=lane_name) for model_id, lane_name in pairs]
    long_rates = [
        prices.long_rates(model_id, lane=lane_name) or r
        for (model_id, lane_name), r in zip(pairs, rates, strict=True)
    ]
    prompt = tokens["input_tokens"]
    for column in ("cache_creation_input_tokens", "cache_read_input_tokens"):
        prompt = pc.add(prompt, tokens[column])
    long = pc.greater(prompt, prices.long_context_threshold)
    cost = pa.nulls(len(table), pa.float64()).fill_null(0.0)
    for column in TOKEN_FIELDS:
        standard = pc.take(pa.array([getattr(r, column) for r in rates], pa.float64()), encoded.indices)
        over = pc.take(pa.array([getattr(r, column) for r in long_rates], pa.float64()), encoded.indices)
        per_row = pc.if_else(long, over, standard)
        cost = pc.add(cost, pc.multiply(tokens[column].cast(pa.float64()), pc.fill_null(per_row, 0.0)))
    return cost


_SUMS: tuple[str, ...] = ("ok", "failed", *TOKEN_FIELDS, "cost")
_AGGREGATES: list[tuple[Any, str]] = [([], "count_all"), *((c, "sum") for c in _SUMS)]
_EPOCH_FLOOR = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
"""Timestamps before this are placeholders (a row never sent), not times."""


@dataclass(eq=False, slots=True)
class _Sums:
    """Mergeable counters of one slice of rows (rows, ok, failed, four token kinds, cost)."""

    rows: int = 0
    values: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(_SUMS, 0))

    def add(self, rows: int, values: Mapping[str, Any]) -> None:
        self.rows += int(rows)
        for name in _SUMS:
            self.values[name] += values[name] or 0

    def tally(self) -> Tally:
        v = self.values
        return Tally(
            rows=self.rows,
            ok=int(v["ok"]),
            failed=int(v["failed"]),
            tokens=Usage(**{name: int(v[name]) for name in TOKEN_FIELDS}),
            cost_usd=float(v["cost"]),
        )


@dataclass(eq=False, slots=True)
class _Accumulator:
    """Partial figures of the batches seen so far; each batch is reduced in pyarrow, then merged here
    (one Python step per group per batch, never per row)."""

    totals: _Sums = field(default_factory=_Sums)
    routes: dict[str, _Sums] = field(default_factory=dict)
    groups: dict[str, _Sums] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    lanes: Counter[str] = field(default_factory=Counter)
    price_tables: set[str] = field(default_factory=set)
    retries: int = 0
    latencies: list[pa.Array] = field(default_factory=list)
    timeline: list[pa.Table] = field(default_factory=list)
    first_start: dt.datetime | None = None
    last_finish: dt.datetime | None = None
    timed_rows: int = 0
    timed_tokens: int = 0
    outputs: dict[str, Counter[int]] = field(default_factory=dict)
    """Per route: how many ok answers had each output length (exact and mergeable; a few
    thousand distinct lengths at most, whatever the row count)."""
    cut_off: Counter[str] = field(default_factory=Counter)

    def add(self, table: pa.Table, work: pa.Table, *, by: str | None) -> None:
        if work.num_rows == 0:
            return
        self.totals.add(work.num_rows, {c: pc.sum(work[c]).as_py() for c in _SUMS})
        routed = work.filter(pc.is_valid(work["route"]))
        _merge_groups(self.routes, routed, "route", "route")
        if by is not None:
            _merge_groups(self.groups, work, BY_COLUMN, by)
        failed = work.filter(pc.equal(work["failed"], 1))
        for item in pc.value_counts(pc.fill_null(failed["error_type"], NULL_KEY)).to_pylist():
            self.errors[item["values"]] += item["counts"]
        for item in pc.value_counts(work["lane"]).to_pylist():
            self.lanes[item["values"]] += item["counts"]
        self.price_tables.update(pc.unique(table["price_table"].drop_null()).to_pylist())
        self.retries += _int(pc.sum(pc.max_element_wise(pc.subtract(work["attempts"], 1), 0)))
        ok_latency = pc.and_(pc.equal(work["ok"], 1), pc.is_valid(work["latency_ms"]))
        self.latencies.append(work["latency_ms"].filter(ok_latency).combine_chunks())
        self._add_times(work)
        self._add_outputs(routed)

    def _add_outputs(self, routed: pa.Table) -> None:
        answered = routed.filter(pc.equal(routed["ok"], 1))
        if answered.num_rows == 0:
            return
        lengths = answered.group_by(["route", "output_tokens"], use_threads=False).aggregate(
            [([], "count_all")]
        )
        for row in lengths.to_pylist():
            self.outputs.setdefault(row["route"], Counter())[row["output_tokens"]] += row["count_all"]
        cut = answered.filter(pc.equal(answered["stop_reason"], "max_tokens"))
        for item in pc.value_counts(cut["route"]).to_pylist():
            self.cut_off[item["values"]] += item["counts"]

    def output_fit(self, max_tokens: int | None) -> dict[str, OutputFit]:
        fits = {}
        for route in sorted(self.outputs):
            counts = self.outputs[route]
            answers = sum(counts.values())
            unused = (
                sum(max(max_tokens - length, 0) * n for length, n in counts.items())
                if max_tokens is not None
                else 0
            )
            fits[route] = OutputFit(
                max_tokens=max_tokens,
                answers=answers,
                reserved_unused=unused,
                output_p999=_quantile(counts, FIT_QUANTILE),
                cut_off=self.cut_off.get(route, 0),
            )
        return fits

    def _add_times(self, work: pa.Table) -> None:
        epoch = pa.scalar(_EPOCH_FLOOR, work["finished_at"].type)
        timed = work.filter(pc.greater(work["finished_at"], epoch))
        if timed.num_rows == 0:
            return
        tokens = timed["input_tokens"]
        for c in TOKEN_FIELDS[1:]:
            tokens = pc.add(tokens, timed[c])
        finished_ms = timed["finished_at"].cast(pa.int64())
        self.timeline.append(pa.table({"finished_ms": finished_ms, "tokens": tokens}).combine_chunks())
        self.timed_rows += timed.num_rows
        self.timed_tokens += _int(pc.sum(tokens))
        started = timed["started_at"].filter(pc.greater(timed["started_at"], epoch))
        first = pc.min(started if len(started) else timed["finished_at"]).as_py()
        last = pc.max(timed["finished_at"]).as_py()
        self.first_start = first if self.first_start is None else min(self.first_start, first)
        self.last_finish = last if self.last_finish is None else max(self.last_finish, last)

    def throughput(self) -> Throughput:
        return Throughput(
            started_at=self.first_start,
            finished_at=self.last_finish,
            rows=self.timed_rows,
            tokens=self.timed_tokens,
        )


def _merge_groups(into: dict[str, _Sums], work: pa.Table, key: str, label: str) -> None:
    """Sum ``work`` per value of column ``key`` (``label`` to users) into ``into``; null is ``(null)``."""
    if work.num_rows == 0:
        return
    try:
        grouped = work.group_by(key, use_threads=False).aggregate(_AGGREGATES)
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise SpecError(f"cannot group by {label!r}: {exc}") from None
    for row in grouped.to_pylist():  # one Python object per group, not per row
        value = row[key]
        name = NULL_KEY if value is None else str(value)
        into.setdefault(name, _Sums()).add(row["count_all"], {c: row[f"{c}_sum"] for c in _SUMS})


def _quantile(counts: Mapping[int, int], q: float) -> int | None:
    """The smallest value that at least ``q`` of the counted values do not exceed."""
    total = sum(counts.values())
    if not total:
        return None
    need, seen = q * total, 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= need:
            return value
    return max(counts)  # pragma: no cover - the loop reaches `need`


def _latency(values: pa.Array) -> Latency:
    if len(values) == 0:
        return Latency()
    q = pc.quantile(values, q=list(QUANTILES), interpolation="linear").to_pylist()
    return Latency(
        count=len(values),
        p50=q[0],
        p95=q[1],
        p99=q[2],
        mean=_float(pc.mean(values)),
        max=_float(pc.max(values)),
    )


def _int(scalar: pa.Scalar) -> int:
    value = scalar.as_py()
    return int(value) if value is not None else 0


def _float(scalar: pa.Scalar) -> float | None:
    value = scalar.as_py()
    return float(value) if value is not None and math.isfinite(value) else None
