"""The HTML report of ``stats --html``: the summary tables and interactive charts, in one file.

One self-contained file (plotly.js inlined) because a report is mailed, attached to tickets and opened
on planes; it must not need the network. Charts are drawn from pre-aggregated figures (per-time-bucket
sums, a binned latency histogram), never from raw rows, so a million-row job makes a report of the same
size as a thousand-row one.

plotly is an optional extra (``pip install 'bedrock-batch[report]'``): it is imported only here, only
when a report is asked for.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from runner.atomic import atomic_write
from runner.errors import SinkError
from runner.state import JobDir
from runner.stats import Collected, JobStats, Tally

INSTALL_HINT = "pip install 'bedrock-batch[report]'"

THROUGHPUT_TITLE = "Throughput over time"
ACTIVITY_TITLE = "Throttles and requests in flight over time"
LATENCY_TITLE = "Latency distribution (ok rows)"
ROUTES_TITLE = "Tokens and cost per route"
ERRORS_TITLE = "Errors by type"


def group_cost_title(by: str) -> str:
    return f"Cost by {by}"


BUCKETS_S: tuple[int, ...] = (1, 5, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)
"""Time bucket sizes for the throughput chart: the smallest that keeps it under ``MAX_BUCKETS`` bars."""
MAX_BUCKETS = 150
LATENCY_BINS = 40


# -- summary (shared with the terminal view) ---------------------------------------------------------


def fmt_int(n: int) -> str:
    return f"{n:,}"


def fmt_usd(x: float) -> str:
    return f"${x:,.4f}" if abs(x) < 100 else f"${x:,.2f}"


def fmt_ms(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f} ms"


def fmt_rate(x: float | None, unit: str) -> str:
    return "-" if x is None else f"{x:,.1f} {unit}"


def overview_rows(stats: JobStats) -> list[tuple[str, str]]:
    """The headline figures as (label, value) pairs: the terminal view and the report both show them."""
    t = stats.tokens
    lat = stats.latency_ms
    thr = stats.throughput
    price = stats.price_table or "(not recorded)"
    if stats.repriced:
        price += " (re-priced from tokens)"
    state = "complete" if stats.complete else f"{fmt_int(stats.pending)} rows pending"
    return [
        ("job", f"{stats.job_dir} ({state}; read from {stats.read_from})"),
        ("rows", fmt_int(stats.rows)),
        ("ok", fmt_int(stats.ok)),
        ("failed", fmt_int(stats.failed)),
        ("pending", fmt_int(stats.pending)),
        ("input tokens", fmt_int(t.input_tokens)),
        ("output tokens", fmt_int(t.output_tokens)),
        ("cache read tokens", fmt_int(t.cache_read_input_tokens)),
        ("cache write tokens", fmt_int(t.cache_creation_input_tokens)),
        ("cost", fmt_usd(stats.cost_usd)),
        ("price table", price),
        ("latency p50 / p95 / p99", f"{fmt_ms(lat.p50)} / {fmt_ms(lat.p95)} / {fmt_ms(lat.p99)}"),
        (
            "throughput",
            f"{fmt_rate(thr.rows_per_second, 'rows/s')}, {fmt_rate(thr.tokens_per_minute, 'tokens/min')}",
        ),
        ("elapsed", f"{thr.elapsed_s:,.1f} s"),
        ("retries", fmt_int(stats.retries)),
        ("lanes", ", ".join(f"{lane} {fmt_int(n)}" for lane, n in stats.lanes.items())),
    ]


TALLY_HEADERS: tuple[str, ...] = (
    "rows",
    "ok",
    "failed",
    "input",
    "output",
    "cache read",
    "cache write",
    "cost",
)


def tally_cells(tally: Tally) -> list[str]:
    """A route's or group's figures as table cells, in ``TALLY_HEADERS`` order."""
    t = tally.tokens
    return [
        fmt_int(tally.rows),
        fmt_int(tally.ok),
        fmt_int(tally.failed),
        fmt_int(t.input_tokens),
        fmt_int(t.output_tokens),
        fmt_int(t.cache_read_input_tokens),
        fmt_int(t.cache_creation_input_tokens),
        fmt_usd(tally.cost_usd),
    ]


# -- the report --------------------------------------------------------------------------------------


def write_html(path: Path, collected: Collected) -> Path:
    """Write the report to ``path`` atomically (a half-written report never replaces a good one),
    created like every other output (``0666`` less the umask: ``0644`` by default)."""
    text = build_html(collected, samples=progress_samples(Path(collected.stats.job_dir)))
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise SinkError(f"{path}: cannot write the report ({exc.strerror})") from None
    return path


def build_html(collected: Collected, *, samples: Sequence[ProgressSample] = ()) -> str:
    """The whole report as one HTML document (plotly.js inlined once, before the first chart).

    ``samples``: the runs' ``job.progress`` figures (:func:`progress_samples`), for the throttles and
    in-flight chart. A chart with nothing to draw is left out.
    """
    go, make_subplots = _plotly()
    stats = collected.stats
    figures = []
    if collected.timeline.num_rows:
        figures.append(throughput_figure(go, collected.timeline))
    if samples:
        figures.append(activity_figure(go, samples))
    if len(collected.latencies):
        figures.append(latency_figure(go, collected.latencies))
    if stats.routes:
        figures.append(routes_figure(go, make_subplots, stats))
    if stats.errors:
        figures.append(errors_figure(go, stats))
    if stats.by is not None and stats.groups:
        figures.append(groups_figure(go, stats))
    charts = [
        fig.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False})
        for i, fig in enumerate(figures)
    ]
    title = f"bedrock-batch report: {stats.job_dir}"
    body = [f"<h1>{_e(title)}</h1>", "<h2>Summary</h2>", _kv_table(overview_rows(stats))]
    if stats.routes:
        body += ["<h2>Routes</h2>", _tally_table("route", stats.routes)]
    if stats.errors:
        rows = [[k, fmt_int(v)] for k, v in stats.errors.items()]
        body += ["<h2>Errors</h2>", _table(("error type", "rows"), rows)]
    if stats.by is not None and stats.groups is not None:
        body += [f"<h2>By {_e(stats.by)}</h2>", _tally_table(stats.by, stats.groups)]
    if not figures:
        body.append('<p class="foot">No charts yet: no row of this job has finished.</p>')
    for fig, chart in zip(figures, charts, strict=True):
        body += [f"<h2>{_e(fig.layout.title.text)}</h2>", f'<div class="chart">{chart}</div>']
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body.append(f'<p class="foot">Generated {generated} by bedrock-batch stats --html.</p>')
    return _PAGE.format(title=_e(title), body="\n".join(body))


# -- the runs' progress events -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProgressSample:
    """One ``job.progress`` event: when, requests in flight, throttled attempts per minute."""

    at: dt.datetime
    in_flight: int
    throttles_per_min: float
    routes_in_flight: Mapping[str, int]
    run: int
    """Which run of the job (0, 1, ...): lines are not drawn across runs."""


_SAMPLED = ("job.started", "job.progress")


def progress_samples(job_dir: Path) -> list[ProgressSample]:
    """The ``job.progress`` figures every run logged into ``_job/events.jsonl``, oldest first.

    Throttles are counted per run in the events; here they become throttled attempts per minute
    between two samples. Unreadable lines (a run killed mid-write) are skipped.
    """
    path = JobDir(job_dir).events_file
    samples: list[ProgressSample] = []
    try:
        handle = path.open(encoding="utf-8")
    except OSError:
        return samples
    run, last_at, last_throttles = -1, None, 0
    with handle:
        for line in handle:
            if not any(name in line for name in _SAMPLED):
                continue
            try:
                event = json.loads(line)
                at = dt.datetime.fromisoformat(event["timestamp"])
            except (ValueError, KeyError, TypeError):
                continue
            if event.get("event") == "job.started":
                run, last_at, last_throttles = run + 1, at, 0
                continue
            if event.get("event") != "job.progress" or last_at is None:
                continue
            throttles = int(event.get("throttles") or 0)
            span_min = max((at - last_at).total_seconds(), 1e-3) / 60
            routes = event.get("routes")
            samples.append(
                ProgressSample(
                    at=at,
                    in_flight=int(event.get("in_flight") or 0),
                    throttles_per_min=max(0, throttles - last_throttles) / span_min,
                    routes_in_flight={
                        name: int(r.get("in_flight") or 0)
                        for name, r in (routes if isinstance(routes, dict) else {}).items()
                    },
                    run=max(run, 0),
                )
            )
            last_at, last_throttles = at, throttles
    return samples


# -- charts ------------------------------------------------------------------------------------------


def throughput_figure(go: Any, timeline: pa.Table) -> Any:
    """Rows and tokens per minute, bucketed by finish time (the bucket size fits the job's span)."""
    fig = go.Figure()
    _layout(fig, THROUGHPUT_TITLE)
    if timeline.num_rows == 0:
        return _empty_note(fig, "no finished rows yet")
    ms = timeline["finished_ms"]
    span_s = (pc.max(ms).as_py() - pc.min(ms).as_py()) / 1000
    bucket = next((b for b in BUCKETS_S if span_s / b <= MAX_BUCKETS), BUCKETS_S[-1])
    start = pc.multiply(pc.divide(ms, bucket * 1000), bucket * 1000)
    grouped = (
        pa.table({"t": start, "tokens": timeline["tokens"]})
        .group_by("t", use_threads=False)
        .aggregate([([], "count_all"), ("tokens", "sum")])
        .sort_by("t")
    )
    per_minute = 60.0 / bucket
    x = [dt.datetime.fromtimestamp(t / 1000, dt.UTC) for t in grouped["t"].to_pylist()]
    rows = [n * per_minute for n in grouped["count_all"].to_pylist()]
    toks = [n * per_minute for n in grouped["tokens_sum"].to_pylist()]
    fig.add_trace(go.Scatter(x=x, y=rows, name="rows/min", mode="lines+markers", line_shape="hv"))
    fig.add_trace(go.Scatter(x=x, y=toks, name="tokens/min", mode="lines", line_shape="hv", yaxis="y2"))
    fig.update_layout(
        xaxis_title=f"finished at (UTC, {bucket} s buckets)",
        yaxis={"title": {"text": "rows per minute"}, "rangemode": "tozero"},
        yaxis2={
            "title": {"text": "tokens per minute"},
            "overlaying": "y",
            "side": "right",
            "rangemode": "tozero",
        },
    )
    return fig


def activity_figure(go: Any, samples: Sequence[ProgressSample]) -> Any:
    """Requests in flight (all routes, and each route when there are several) and throttled attempts
    per minute, from the runs' ``job.progress`` events; lines break between runs."""
    fig = go.Figure()
    _layout(fig, ACTIVITY_TITLE)
    x: list[Any] = []
    total: list[Any] = []
    throttles: list[Any] = []
    names = sorted({name for s in samples for name in s.routes_in_flight})
    per_route: dict[str, list[Any]] = {name: [] for name in names}
    previous_run = samples[0].run
    for sample in samples:
        if sample.run != previous_run:  # a gap, not a line, between two runs
            x.append(None)
            total.append(None)
            throttles.append(None)
            for values in per_route.values():
                values.append(None)
            previous_run = sample.run
        x.append(sample.at)
        total.append(sample.in_flight)
        throttles.append(round(sample.throttles_per_min, 1))
        for name, values in per_route.items():
            values.append(sample.routes_in_flight.get(name))
    fig.add_trace(go.Scatter(x=x, y=total, name="in flight (all routes)", mode="lines+markers"))
    if len(names) > 1:
        for name, values in per_route.items():
            fig.add_trace(go.Scatter(x=x, y=values, name=f"in flight {name}", mode="lines", line_dash="dot"))
    fig.add_trace(go.Bar(x=x, y=throttles, name="throttled attempts/min", yaxis="y2", opacity=0.5))
    fig.update_layout(
        xaxis_title="time (UTC, one point per progress event)",
        yaxis={"title": {"text": "requests in flight"}, "rangemode": "tozero"},
        yaxis2={
            "title": {"text": "throttled attempts per minute"},
            "overlaying": "y",
            "side": "right",
            "rangemode": "tozero",
        },
    )
    return fig


def latency_figure(go: Any, values: pa.Array) -> Any:
    """Histogram of ok rows' latency, binned here: the tail beyond p99 is folded into one last bar."""
    fig = go.Figure()
    _layout(fig, LATENCY_TITLE)
    if len(values) == 0:
        return _empty_note(fig, "no ok rows yet")
    lo = pc.min(values).as_py()
    hi = pc.quantile(values, q=0.99, interpolation="linear").to_pylist()[0]
    width = (hi - lo) / LATENCY_BINS or 1.0
    index = pc.floor(pc.divide(pc.subtract(values, lo), width)).cast(pa.int64())
    index = pc.min_element_wise(index, LATENCY_BINS)  # values above p99 land in the overflow bin
    counts = dict.fromkeys(range(LATENCY_BINS + 1), 0)
    for item in pc.value_counts(index).to_pylist():
        counts[item["values"]] = item["counts"]
    labels = [f"{lo + i * width:,.0f}" for i in range(LATENCY_BINS)] + [f"> p99 ({hi:,.0f})"]
    fig.add_trace(go.Bar(x=labels, y=list(counts.values()), name="ok rows"))
    fig.update_layout(xaxis_title="latency (ms, bin start)", yaxis_title="rows", bargap=0.05)
    return fig


def routes_figure(go: Any, make_subplots: Any, stats: JobStats) -> Any:
    """Tokens of each kind (stacked) and cost, per route, side by side."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("tokens", "cost (USD)"))
    _layout(fig, ROUTES_TITLE)
    if not stats.routes:
        return _empty_note(fig, "no routed rows yet")
    names = list(stats.routes)
    kinds = (
        ("input_tokens", "input"),
        ("output_tokens", "output"),
        ("cache_read_input_tokens", "cache read"),
        ("cache_creation_input_tokens", "cache write"),
    )
    for key, label in kinds:
        y = [getattr(stats.routes[n].tokens, key) for n in names]
        fig.add_trace(go.Bar(x=names, y=y, name=label), row=1, col=1)
    cost = [stats.routes[n].cost_usd for n in names]
    fig.add_trace(go.Bar(x=names, y=cost, name="cost (USD)"), row=1, col=2)
    fig.update_layout(barmode="stack")
    return fig


def errors_figure(go: Any, stats: JobStats) -> Any:
    """Failed rows by error type, most frequent first."""
    fig = go.Figure()
    _layout(fig, ERRORS_TITLE)
    if not stats.errors:
        return _empty_note(fig, "no failed rows")
    fig.add_trace(go.Bar(x=list(stats.errors), y=list(stats.errors.values()), name="failed rows"))
    fig.update_layout(yaxis_title="rows")
    return fig


def groups_figure(go: Any, stats: JobStats) -> Any:
    """Cost per value of the ``--by`` column (chargeback: who spent what)."""
    assert stats.by is not None
    fig = go.Figure()
    _layout(fig, group_cost_title(stats.by))
    groups = stats.groups or {}
    fig.add_trace(go.Bar(x=list(groups), y=[g.cost_usd for g in groups.values()], name="cost (USD)"))
    fig.update_layout(xaxis_title=stats.by, yaxis_title="USD")
    return fig


# -- helpers -----------------------------------------------------------------------------------------


def _plotly() -> tuple[Any, Any]:
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError:
        raise SinkError(f"stats --html needs plotly, which is not installed: {INSTALL_HINT}") from None
    return go, make_subplots


def _layout(fig: Any, title: str) -> None:
    fig.update_layout(title={"text": title}, template="plotly_white", height=420, margin={"t": 70})


def _empty_note(fig: Any, note: str) -> Any:
    fig.add_annotation(text=note, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return fig


def _e(value: object) -> str:
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv_table(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def _tally_table(key: str, tallies: Mapping[str, Tally]) -> str:
    return _table((key, *TALLY_HEADERS), [[name, *tally_cells(t)] for name, t in tallies.items()])


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }}
th, td {{ padding: 0.25rem 0.75rem; border-bottom: 1px solid #ddd; text-align: right; }}
th:first-child, td:first-child, table.kv td {{ text-align: left; }}
thead th {{ background: #f4f4f4; }}
.chart {{ margin-bottom: 2rem; }}
.foot {{ color: #777; font-size: 0.8rem; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""
