"""Usage statistics of a job directory: rows, tokens, cost per route, latency, errors, throughput.

Stats read what the runner wrote, never what it holds in memory, so ``stats DIR`` works the same on a
finished job, a running one and one that was killed. The job directory contract (owned by the engine):

- ``_job/parts/part-NNNNN.parquet``: result rows committed atomically while the job runs (RESULT_SCHEMA,
  the input position ``_index``, kept input columns); a row may appear in several parts (a failed row
  rerun on resume), and the highest part number wins;
- ``results.parquet``: rebuilt from the parts when a run ends, one row per input row with an outcome;
- ``_job/state.json``: at least ``{"input": {"rows": N}}``, the input size, so pending can be counted.

Parts are the truth, so stats read them and keep, per input position (per id where a file lacks
``_index``), the row written last; ``results.parquet`` is read only when there are no parts. Rows
still in the engine's write-ahead journal (at most ``part_seconds`` old) are not counted yet.

Everything is columnar (pyarrow compute and ``Table.group_by``): a million-row job is summarised
without a Python loop over rows, and only the columns the figures need are read (completions stay
on disk).

Cost is what the engine recorded per row (``cost_usd``, priced with the route that served it), under the
table named in the rows' ``price_table`` column. With ``prices=`` the rows are re-priced from their
tokens with that table instead, and the stats say so (``repriced``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from runner.errors import SpecError, StateError
from runner.pricing import LANES, PriceTable
from runner.sink import INDEX_COLUMN

RESULTS_FILE = "results.parquet"
WORK_DIR = "_job"
PARTS_DIR = f"{WORK_DIR}/parts"
STATE_FILE = f"{WORK_DIR}/state.json"
PART_GLOB = "part-*.parquet"  # the engine's temporary files start with a dot: never matched
_PART_NUMBER = re.compile(r"part-(\d+)")

TOKEN_COLUMNS: tuple[str, ...] = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)
STATS_COLUMNS: tuple[str, ...] = (
    "id",
    "status",
    *TOKEN_COLUMNS,
    "model_id",
    "region",
    "attempts",
    "latency_ms",
    "error_type",
    "cost_usd",
    "price_table",
    "lane",
    "started_at",
    "finished_at",
)
"""The columns the figures are made of; text columns (completion, error_message) are never read."""

NULL_KEY = "(null)"
"""How a null value of a ``--by`` column (or a null error type) is named in the output."""

QUANTILES: tuple[float, ...] = (0.5, 0.95, 0.99)

_ROW = "__row"
BY_COLUMN = "__by"
"""Name of the ``--by`` column in :func:`prepare`'s table (the user's name may clash with ours)."""
_READ_ATTEMPTS = 3


# -- values ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tokens:
    """Token counts of each kind Bedrock reports."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_creation: int = 0

    @property
    def total(self) -> int:
        """Every token processed, cached or not (the basis of tokens per minute)."""
        return self.input + self.output + self.cache_read + self.cache_creation

    def to_dict(self) -> dict[str, int]:
        return {
            "input": self.input,
            "output": self.output,
            "cache_read": self.cache_read,
            "cache_creation": self.cache_creation,
        }


@dataclass(frozen=True, slots=True)
class Tally:
    """The figures of one slice of the rows: a route, a lane, or one value of the ``--by`` column."""

    rows: int
    ok: int
    failed: int
    tokens: Tokens
    cost_usd: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "ok": self.ok,
            "failed": self.failed,
            "tokens": self.tokens.to_dict(),
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
    tokens: Tokens
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

    @property
    def complete(self) -> bool:
        """Whether every input row has an outcome."""
        return self.pending == 0

    def to_dict(self) -> dict[str, Any]:
        """The ``stats --json`` object: DESIGN.md keys first, then the rest; JSON-safe values only."""
        out: dict[str, Any] = {
            "rows": self.rows,
            "ok": self.ok,
            "failed": self.failed,
            "pending": self.pending,
            "input_tokens": self.tokens.input,
            "output_tokens": self.tokens.output,
            "cache_read_input_tokens": self.tokens.cache_read,
            "cache_creation_input_tokens": self.tokens.cache_creation,
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
        if self.by is not None:
            out["by"] = self.by
            out["groups"] = {k: v.to_dict() for k, v in (self.groups or {}).items()}
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)


@dataclass(frozen=True, slots=True)
class JobData:
    """The deduplicated result rows of a job (stats columns only) and what the job directory says."""

    job_dir: Path
    table: pa.Table
    input_rows: int | None
    """From ``_job/state.json``; None when the directory has no state (results only)."""
    columns: tuple[str, ...]
    """Every column the result files have: what ``--by`` may name."""
    read_from: str = ""


# -- reading -----------------------------------------------------------------------------------------


def is_job_dir(path: Path) -> bool:
    """Whether ``path`` looks like a job directory: results, or the runner's working directory."""
    return path.is_dir() and ((path / RESULTS_FILE).is_file() or (path / WORK_DIR).is_dir())


def read_job(job_dir: Path, *, extra_columns: Iterable[str] = ()) -> JobData:
    """Read the result rows of a job, newest row per id, with the stats columns and ``extra_columns``.

    Raises :class:`StateError` when ``job_dir`` is not a job directory or a file in it is unreadable,
    :class:`SpecError` when an extra column does not exist (the message lists those that do).
    """
    job_dir = Path(job_dir)
    if not is_job_dir(job_dir):
        raise StateError(f"{job_dir}: not a job directory (no {RESULTS_FILE} and no {WORK_DIR}/)")
    # A running job may compact its parts into results.parquet and delete them between our listing
    # and our reading; the files are replaced atomically, so listing again gives a consistent view.
    for attempt in range(_READ_ATTEMPTS):
        try:
            return _read_job_once(job_dir, tuple(extra_columns))
        except FileNotFoundError:
            if attempt == _READ_ATTEMPTS - 1:
                raise StateError(f"{job_dir}: result files kept changing while being read") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _read_job_once(job_dir: Path, extra: tuple[str, ...]) -> JobData:
    # Parts are the truth while a job runs and after it ends (results.parquet is rebuilt from them);
    # results.parquet alone is a finished job whose working files were removed or never shipped.
    parts = sorted((job_dir / PARTS_DIR).glob(PART_GLOB), key=_part_order)
    results = job_dir / RESULTS_FILE
    files = parts or ([results] if results.is_file() else [])

    schemas = [(path, _schema(path)) for path in files]
    names: dict[str, None] = {}
    for _, schema in schemas:
        names.update(dict.fromkeys(schema.names))
    available = tuple(n for n in names if n != INDEX_COLUMN)
    missing = [c for c in extra if c not in available]
    if missing:
        raise SpecError(
            f"{job_dir}: no column {missing[0]!r} in the results; available: {', '.join(available)}"
        )
    # Same key as the engine: the input position when every file has it, else the row id.
    key = INDEX_COLUMN if schemas and all(INDEX_COLUMN in s.names for _, s in schemas) else "id"
    wanted = list(dict.fromkeys((*STATS_COLUMNS, *extra, key)))

    tables = [_read_columns(path, schema, wanted) for path, schema in schemas]
    try:
        table = _empty(wanted) if not tables else pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException as exc:
        raise StateError(f"{job_dir}: result files disagree on column types ({exc})") from None
    table = _latest(table, key)
    if key not in (*STATS_COLUMNS, *extra):
        table = table.drop_columns([key])

    if parts:
        read_from = f"{len(parts)} part file{'s' if len(parts) != 1 else ''}"
    else:
        read_from = RESULTS_FILE if files else "nothing yet"
    return JobData(
        job_dir=job_dir,
        table=table,
        input_rows=_input_rows(job_dir),
        columns=available,
        read_from=read_from,
    )


def _part_order(path: Path) -> tuple[int, str]:
    match = _PART_NUMBER.match(path.name)
    return (int(match.group(1)) if match else -1, path.name)


def _schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise StateError(f"{path}: not a readable Parquet file ({exc})") from None


def _read_columns(path: Path, schema: pa.Schema, wanted: Sequence[str]) -> pa.Table:
    """The wanted columns of one file; columns it lacks come back as nulls of the contract's type."""
    present = [c for c in wanted if c in schema.names]
    try:
        table = pq.read_table(path, columns=present)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise StateError(f"{path}: not a readable Parquet file ({exc})") from None
    for name in wanted:
        if name not in schema.names:
            table = table.append_column(name, pa.nulls(table.num_rows, _contract_type(name)))
    return table.select(list(wanted))


def _contract_type(name: str) -> pa.DataType:
    from runner.schemas import RESULT_SCHEMA

    index = RESULT_SCHEMA.get_field_index(name)
    return RESULT_SCHEMA.field(index).type if index >= 0 else pa.null()


def _empty(columns: Sequence[str]) -> pa.Table:
    return pa.table({c: pa.array([], _contract_type(c)) for c in columns})


def _latest(table: pa.Table, key: str) -> pa.Table:
    """One row per ``key``: the one read last (parts are read oldest first: the highest part wins)."""
    if table.num_rows == 0:
        return table
    numbered = table.append_column(_ROW, pa.array(range(table.num_rows), pa.int64()))
    last = numbered.group_by(key, use_threads=False).aggregate([(_ROW, "max")])[f"{_ROW}_max"]
    if len(last) == table.num_rows:
        return table
    return table.take(pc.take(last, pc.sort_indices(last)))  # keep the read order


def _input_rows(job_dir: Path) -> int | None:
    path = job_dir / STATE_FILE
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
    """Read ``job_dir`` and summarise it; ``by`` groups by a column, ``prices`` re-prices the rows."""
    data = read_job(job_dir, extra_columns=(by,) if by else ())
    return summarize(data, by=by, prices=prices)


def summarize(data: JobData, *, by: str | None = None, prices: PriceTable | None = None) -> JobStats:
    """The figures of already-read job data (the HTML report reads once and reuses the rows)."""
    table = data.table
    if by is not None and by not in table.column_names:
        raise SpecError(
            f"{data.job_dir}: no column {by!r} in the results; available: {', '.join(data.columns)}"
        )
    work = prepare(table, prices=prices, by=by)
    totals = _tally_of(work)
    pending = max(data.input_rows - totals.rows, 0) if data.input_rows is not None else 0

    routed = work.filter(pc.is_valid(work["route"]))
    return JobStats(
        job_dir=str(data.job_dir),
        rows=totals.rows + pending,
        ok=totals.ok,
        failed=totals.failed,
        pending=pending,
        tokens=totals.tokens,
        cost_usd=totals.cost_usd,
        price_table=prices.name if prices is not None else _price_tables(table),
        repriced=prices is not None,
        routes=_tallies(routed, "route", "route"),
        unrouted=work.num_rows - routed.num_rows,
        latency_ms=_latency(work),
        retries=_int(pc.sum(pc.max_element_wise(pc.subtract(work["attempts"], 1), 0))),
        errors=_errors(work),
        throughput=_throughput(work),
        lanes=_lanes(work),
        read_from=data.read_from,
        by=by,
        groups=_tallies(work, BY_COLUMN, by) if by is not None else None,
    )


def prepare(table: pa.Table, *, prices: PriceTable | None = None, by: str | None = None) -> pa.Table:
    """The rows with the derived columns every figure uses: ``ok``/``failed`` as 0/1, ``route``,
    ``cost`` (recorded or re-priced), nulls filled so aggregates need no special cases, and the
    ``by`` column as ``BY_COLUMN``."""
    table = table.combine_chunks()
    status = table["status"].combine_chunks()
    tokens = {c: pc.fill_null(table[c].combine_chunks(), 0).cast(pa.int64()) for c in TOKEN_COLUMNS}
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
        "started_at": table["started_at"].combine_chunks(),
        "finished_at": table["finished_at"].combine_chunks(),
    }
    if by is not None:
        columns[BY_COLUMN] = table[by].combine_chunks()
    return pa.table(columns)


def _reprice(table: pa.Table, tokens: Mapping[str, pa.Array], lane: pa.Array, prices: PriceTable) -> pa.Array:
    """Cost per row from its tokens with ``prices``: one rate look-up per distinct (model, lane)."""
    key = pc.binary_join_element_wise(
        table["model_id"].combine_chunks(), lane, "\x00", null_handling="emit_null"
    )
    encoded = key.dictionary_encode()
    rates = [
        prices.rates(model_id, lane=lane_name)
        for model_id, _, lane_name in (v.partition("\x00") for v in encoded.dictionary.to_pylist())
    ]
    cost = pa.nulls(len(table), pa.float64()).fill_null(0.0)
    # TOKEN_COLUMNS is (input, output, cache read, cache creation); Rates is (input, output, write, read).
    for column, slot in zip(TOKEN_COLUMNS, (0, 1, 3, 2), strict=True):
        per_row = pc.take(pa.array([r[slot] for r in rates], pa.float64()), encoded.indices)
        cost = pc.add(cost, pc.multiply(tokens[column].cast(pa.float64()), pc.fill_null(per_row, 0.0)))
    return cost


_SUMS: tuple[str, ...] = ("ok", "failed", *TOKEN_COLUMNS, "cost")


def _tally_of(work: pa.Table) -> Tally:
    sums = {c: pc.sum(work[c]).as_py() or 0 for c in _SUMS}
    return _tally(work.num_rows, sums)


def _tally(rows: int, sums: Mapping[str, Any]) -> Tally:
    return Tally(
        rows=int(rows),
        ok=int(sums["ok"] or 0),
        failed=int(sums["failed"] or 0),
        tokens=Tokens(
            input=int(sums["input_tokens"] or 0),
            output=int(sums["output_tokens"] or 0),
            cache_read=int(sums["cache_read_input_tokens"] or 0),
            cache_creation=int(sums["cache_creation_input_tokens"] or 0),
        ),
        cost_usd=float(sums["cost"] or 0.0),
    )


def _tallies(work: pa.Table, key: str, label: str) -> dict[str, Tally]:
    """One tally per value of column ``key`` (``label`` to users), sorted; null is named ``(null)``."""
    try:
        grouped = work.group_by(key, use_threads=False).aggregate(
            [([], "count_all"), *((c, "sum") for c in _SUMS)]
        )
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise SpecError(f"cannot group by {label!r}: {exc}") from None
    out: dict[str, Tally] = {}
    for row in grouped.to_pylist():  # one Python object per group, not per row
        value = row[key]
        name = NULL_KEY if value is None else str(value)
        out[name] = _tally(row["count_all"], {c: row[f"{c}_sum"] for c in _SUMS})
    return dict(sorted(out.items()))


def _latency(work: pa.Table) -> Latency:
    values = work["latency_ms"].filter(pc.and_(pc.equal(work["ok"], 1), pc.is_valid(work["latency_ms"])))
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


def _errors(work: pa.Table) -> dict[str, int]:
    failed = work.filter(pc.equal(work["failed"], 1))
    if failed.num_rows == 0:
        return {}
    counts = pc.value_counts(pc.fill_null(failed["error_type"], NULL_KEY)).to_pylist()
    return dict(sorted(((c["values"], c["counts"]) for c in counts), key=lambda kv: (-kv[1], kv[0])))


def _lanes(work: pa.Table) -> dict[str, int]:
    lanes = dict.fromkeys(LANES, 0)
    for count in pc.value_counts(work["lane"]).to_pylist():
        lanes[count["values"]] = count["counts"]
    return lanes


def _throughput(work: pa.Table) -> Throughput:
    """Over the rows that carry real timestamps: rows never sent may have none (or the epoch)."""
    epoch = pa.scalar(dt.datetime(2000, 1, 1, tzinfo=dt.UTC), work["finished_at"].type)
    timed = work.filter(pc.greater(work["finished_at"], epoch))
    if timed.num_rows == 0:
        return Throughput()
    started = timed["started_at"].filter(pc.greater(timed["started_at"], epoch))
    first = pc.min(started if len(started) else timed["finished_at"]).as_py()
    last = pc.max(timed["finished_at"]).as_py()
    tokens = sum(_int(pc.sum(timed[c])) for c in TOKEN_COLUMNS)
    return Throughput(started_at=first, finished_at=last, rows=timed.num_rows, tokens=tokens)


def _price_tables(table: pa.Table) -> str | None:
    names = pc.unique(table["price_table"].drop_null()).to_pylist()
    return ", ".join(sorted(names)) if names else None


def _int(scalar: pa.Scalar) -> int:
    value = scalar.as_py()
    return int(value) if value is not None else 0


def _float(scalar: pa.Scalar) -> float | None:
    value = scalar.as_py()
    return float(value) if value is not None and math.isfinite(value) else None
