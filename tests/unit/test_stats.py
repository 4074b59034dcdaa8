"""Usage statistics of a job directory: figures equal independent sums over the parquet rows.

The job directories here are written directly (``write_job``), following the engine's contract
(``results.parquet``, ``_job/parts/part-NNNNN.parquet``, ``_job/state.json``), so these tests do not
wait for the engine.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from runner import stats as stats_module
from runner.cli.stats import stats_command
from runner.errors import SpecError, StateError
from runner.pricing import PriceTable
from runner.schemas import RESULT_SCHEMA
from runner.stats import compute_stats
from runner.types import Usage

SONNET_45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"
SONNET_4 = "anthropic.claude-sonnet-4-20250514-v1:0"
ROUTES: tuple[tuple[str, str, str], ...] = (
    (f"global.{SONNET_45}", "us-east-1", "on_demand"),
    (f"us.{SONNET_45}", "us-west-2", "on_demand"),
    (f"global.{SONNET_4}", "us-east-1", "on_demand"),
    (f"us.{SONNET_4}", "us-east-2", "on_demand"),
    (f"us.{SONNET_45}", "us-east-1", "batch"),
)
TEAMS = ("search", "ads", "support")
ERRORS = ("ValidationException", "ThrottlingException", "RowError")
T0 = dt.datetime(2025, 11, 20, 12, 0, tzinfo=dt.UTC)
SCHEMA = RESULT_SCHEMA.append(pa.field("team", pa.string()))
PRICES = PriceTable.load()


def make_row(i: int, rng: random.Random, *, status: str | None = None) -> dict[str, Any]:
    """One result row as the engine would write it, priced with the built-in table."""
    status = status or ("ok" if rng.random() < 0.8 else "error")
    model_id, region, lane = ROUTES[rng.randrange(len(ROUTES))]
    started = T0 + dt.timedelta(seconds=rng.uniform(0, 600))
    row: dict[str, Any] = {
        "id": f"row-{i:05d}",
        "status": status,
        "completion": "text" if status == "ok" else None,
        "stop_reason": "end_turn" if status == "ok" else None,
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "model_id": model_id,
        "region": region,
        "attempts": rng.randint(1, 4),
        "latency_ms": None,
        "error_type": None,
        "error_message": None,
        "request_id": f"req-{i}",
        "cost_usd": 0.0,
        "price_table": PRICES.name,
        "lane": lane,
        "started_at": started,
        "finished_at": started + dt.timedelta(milliseconds=rng.uniform(200, 9000)),
        "retryable": False,
        "request_key": i,
        "team": TEAMS[i % len(TEAMS)] if i % 7 else None,
    }
    if status == "ok":
        usage = Usage(
            input_tokens=rng.randint(100, 5000),
            output_tokens=rng.randint(10, 800),
            cache_creation_input_tokens=rng.choice((0, 0, 1200)),
            cache_read_input_tokens=rng.choice((0, 1200, 1200)),
        )
        row |= {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_creation_input_tokens": usage.cache_creation_input_tokens,
            "cache_read_input_tokens": usage.cache_read_input_tokens,
            "latency_ms": rng.uniform(150, 9000),
            "cost_usd": PRICES.cost(model_id, usage, lane=lane),
        }
    else:
        error_type = ERRORS[rng.randrange(len(ERRORS))]
        row |= {"error_type": error_type, "error_message": "no"}
        if error_type == "RowError":  # never sent: no route, no timestamps
            row |= {"model_id": None, "region": None, "attempts": 0, "started_at": None}
            row |= {"finished_at": None}
    return row


def make_rows(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [make_row(i, rng) for i in range(n)]


def _write(path: Path, rows: Sequence[dict[str, Any]], *, index: bool = False) -> None:
    """One parquet file; parts carry the input position ``_index`` as the engine's do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(list(rows), schema=SCHEMA)
    if index:
        positions = [int(r["id"].removeprefix("row-")) for r in rows]
        table = table.append_column("_index", pa.array(positions, pa.int64()))
    pq.write_table(table, path)


def write_job(
    job_dir: Path,
    rows: Sequence[dict[str, Any]],
    *,
    input_rows: int | None = None,
    results: Sequence[dict[str, Any]] | None = None,
    parts: Sequence[Sequence[dict[str, Any]]] = (),
) -> Path:
    """A job directory by the engine's contract: results.parquet, numbered parts and state.json.

    With neither ``results`` nor ``parts``, ``rows`` become results.parquet (a finished job).
    """
    job_dir.mkdir(parents=True, exist_ok=True)
    if results is None and not parts:
        results = rows
    if results is not None:
        _write(job_dir / "results.parquet", results)
    for number, part in enumerate(parts, start=1):
        _write(job_dir / "_job" / "parts" / f"part-{number:05d}.parquet", part, index=True)
    if input_rows is not None or parts:
        state = {"input": {"rows": input_rows if input_rows is not None else len(rows)}}
        (job_dir / "_job").mkdir(exist_ok=True)
        (job_dir / "_job" / "state.json").write_text(json.dumps(state), encoding="utf-8")
    return job_dir


def linear_quantile(values: Sequence[float], q: float) -> float:
    """The textbook linear-interpolation quantile (numpy's default), for checking."""
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def approx_tree(value: Any) -> Any:
    """``value`` with every float compared approximately (sums depend on the order of addition)."""
    if isinstance(value, dict):
        return {k: approx_tree(v) for k, v in value.items()}
    if isinstance(value, float):
        return pytest.approx(value)
    return value


def expected_tally(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rows": len(rows),
        "ok": sum(r["status"] == "ok" for r in rows),
        "failed": sum(r["status"] == "error" for r in rows),
        "tokens": {
            "input": sum(r["input_tokens"] for r in rows),
            "output": sum(r["output_tokens"] for r in rows),
            "cache_read": sum(r["cache_read_input_tokens"] for r in rows),
            "cache_creation": sum(r["cache_creation_input_tokens"] for r in rows),
        },
        "cost_usd": pytest.approx(sum(r["cost_usd"] for r in rows)),
    }


@pytest.fixture(name="rows")
def fixture_rows() -> list[dict[str, Any]]:
    return make_rows(400)


@pytest.fixture(name="job")
def fixture_job(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    return write_job(tmp_path / "job", rows)


def read_back(job: Path) -> list[dict[str, Any]]:
    """The rows as stored, independently of runner.stats."""
    return list(pq.read_table(job / "results.parquet").to_pylist())


class TestFinishedJob:
    def test_totals(self, job: Path) -> None:
        """Row counts, tokens and cost equal plain sums over the stored rows."""
        stored = read_back(job)
        got = compute_stats(job).to_dict()
        want = expected_tally(stored)
        assert got["rows"] == len(stored)
        assert got["ok"] == want["ok"]
        assert got["failed"] == want["failed"]
        assert got["pending"] == 0
        assert got["input_tokens"] == want["tokens"]["input"]
        assert got["output_tokens"] == want["tokens"]["output"]
        assert got["cache_read_input_tokens"] == want["tokens"]["cache_read"]
        assert got["cache_creation_input_tokens"] == want["tokens"]["cache_creation"]
        assert got["cost_usd"] == want["cost_usd"]
        assert got["price_table"] == "bedrock-on-demand-2025-11"
        assert got["repriced"] is False
        assert got["complete"] is True

    def test_routes(self, job: Path) -> None:
        """Per route (model_id@region): rows, ok, failed, tokens and cost; never-sent rows are unrouted."""
        stored = read_back(job)
        by_route: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in stored:
            if r["model_id"] is not None:
                by_route[f"{r['model_id']}@{r['region']}"].append(r)
        got = compute_stats(job).to_dict()
        assert set(got["routes"]) == set(by_route)
        for name, route_rows in by_route.items():
            assert got["routes"][name] == expected_tally(route_rows), name
        assert got["unrouted"] == sum(r["model_id"] is None for r in stored)

    def test_latency_of_ok_rows(self, job: Path) -> None:
        """p50/p95/p99 are linear-interpolated quantiles of the ok rows' latency."""
        values = [r["latency_ms"] for r in read_back(job) if r["status"] == "ok"]
        got = compute_stats(job).to_dict()["latency_ms"]
        assert got["count"] == len(values)
        for key, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            assert got[key] == pytest.approx(linear_quantile(values, q))
        assert got["max"] == pytest.approx(max(values))

    def test_retries_errors_lanes(self, job: Path) -> None:
        """Retries are attempts beyond the first; errors count by type; lanes count rows."""
        stored = read_back(job)
        got = compute_stats(job).to_dict()
        assert got["retries"] == sum(max(r["attempts"] - 1, 0) for r in stored)
        assert got["errors"] == dict(Counter(r["error_type"] for r in stored if r["status"] == "error"))
        assert got["lanes"] == dict(Counter(r["lane"] for r in stored))

    def test_throughput(self, job: Path) -> None:
        """Rows per second and tokens per minute over first start .. last finish of sent rows."""
        sent = [r for r in read_back(job) if r["finished_at"] is not None]
        start = min(r["started_at"] for r in sent)
        end = max(r["finished_at"] for r in sent)
        elapsed = (end - start).total_seconds()
        tokens = sum(
            r["input_tokens"]
            + r["output_tokens"]
            + r["cache_read_input_tokens"]
            + r["cache_creation_input_tokens"]
            for r in sent
        )
        got = compute_stats(job).to_dict()["throughput"]
        assert got["elapsed_s"] == pytest.approx(elapsed)
        assert got["rows_per_second"] == pytest.approx(len(sent) / elapsed)
        assert got["tokens_per_minute"] == pytest.approx(tokens * 60 / elapsed)
        assert dt.datetime.fromisoformat(got["started_at"]) == start

    def test_json_round_trip(self, job: Path) -> None:
        """to_json is strict JSON (no NaN) and equals to_dict."""
        stats = compute_stats(job)
        assert json.loads(stats.to_json()) == json.loads(json.dumps(stats.to_dict()))


class TestCost:
    def _one_route(self, tmp_path: Path, model_id: str, lane: str = "on_demand") -> float:
        rng = random.Random(1)
        row = make_row(0, rng, status="ok")
        usage = Usage(50_000, 50_000, 50_000, 50_000)  # under the long-context threshold
        row |= {
            "model_id": model_id,
            "lane": lane,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_creation_input_tokens": usage.cache_creation_input_tokens,
            "cache_read_input_tokens": usage.cache_read_input_tokens,
            "cost_usd": PRICES.cost(model_id, usage, lane=lane),
        }
        job = write_job(tmp_path / f"{model_id}-{lane}", [row])
        stats = compute_stats(job)
        assert stats.cost_usd == pytest.approx(compute_stats(job, prices=PRICES).cost_usd)
        return stats.cost_usd

    def test_regional_surcharge_sonnet_45(self, tmp_path: Path) -> None:
        """Sonnet 4.5 via us. costs 10 % more than via global."""
        g = self._one_route(tmp_path, f"global.{SONNET_45}")
        assert g == pytest.approx((3 + 15 + 3.75 + 0.30) / 20)
        assert self._one_route(tmp_path, f"us.{SONNET_45}") == pytest.approx(g * 1.1)

    def test_no_surcharge_sonnet_4(self, tmp_path: Path) -> None:
        """Sonnet 4 costs the same via us. and global."""
        g = self._one_route(tmp_path, f"global.{SONNET_4}")
        assert self._one_route(tmp_path, f"us.{SONNET_4}") == pytest.approx(g)

    def test_batch_lane_is_half(self, tmp_path: Path) -> None:
        """A batch row costs 50 % of the same row on-demand."""
        on_demand = self._one_route(tmp_path, f"us.{SONNET_45}")
        assert self._one_route(tmp_path, f"us.{SONNET_45}", "batch") == pytest.approx(on_demand / 2)

    def test_reprice_with_override(self, tmp_path: Path, job: Path) -> None:
        """--prices re-prices every row from its tokens with the given table, and says so."""
        path = tmp_path / "double.toml"
        lines = []
        for base_id in (SONNET_45, SONNET_4):
            price = PRICES.base_price(base_id)
            lines.append(f'[models."{base_id}"]')
            lines += [f"{k} = {getattr(price, k) * 2}" for k in ("input", "output", "cache_write")]
            lines.append(f"cache_read = {price.cache_read * 2}")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        table = PriceTable.load(path)
        got = compute_stats(job, prices=table)
        assert got.repriced is True
        assert got.price_table == str(path)
        assert got.cost_usd == pytest.approx(compute_stats(job).cost_usd * 2)
        for name, route in got.routes.items():
            assert route.cost_usd == pytest.approx(compute_stats(job).routes[name].cost_usd * 2)

    def test_reprice_missing_model(self, tmp_path: Path, job: Path) -> None:
        """A price table without a model the job used is a SpecError naming the model."""
        path = tmp_path / "partial.toml"
        path.write_text(
            f'[models."{SONNET_45}"]\ninput = 1\noutput = 1\ncache_write = 1\ncache_read = 1\n',
            encoding="utf-8",
        )
        with pytest.raises(SpecError, match=r"no price for model '(global|us)\.anthropic\.claude-sonnet-4-2"):
            compute_stats(job, prices=PriceTable.load(path))


class TestGroups:
    def test_by_column(self, job: Path) -> None:
        """--by groups every figure by a kept column; nulls form their own group."""
        stored = read_back(job)
        by_team: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in stored:
            by_team[r["team"] if r["team"] is not None else "(null)"].append(r)
        got = compute_stats(job, by="team").to_dict()
        assert got["by"] == "team"
        assert got["groups"] == {k: expected_tally(v) for k, v in by_team.items()}

    def test_by_result_column(self, job: Path) -> None:
        """A result column (lane) works as a group key too."""
        got = compute_stats(job, by="lane").to_dict()
        assert {k: v["rows"] for k, v in got["groups"].items()} == dict(
            Counter(r["lane"] for r in read_back(job))
        )

    def test_unknown_column(self, job: Path) -> None:
        """An unknown --by column is an error listing the columns there are."""
        with pytest.raises(SpecError, match=r"no column 'teem'.*available: id, status, .*team"):
            compute_stats(job, by="teem")


class TestRunningJob:
    def test_parts_with_duplicates(self, tmp_path: Path) -> None:
        """A running job: parts only, a rerun row superseded by a later part, pending from state."""
        rng = random.Random(3)
        first = [make_row(i, rng, status="error") for i in range(0, 50)]
        second = [make_row(i, rng) for i in range(50, 120)]
        rerun = [make_row(i, rng, status="ok") for i in range(0, 20)]  # rows 0..19 again, now ok
        job = write_job(tmp_path / "job", [], input_rows=300, parts=[first, second, rerun])
        latest = {r["id"]: r for r in (*first, *second, *rerun)}
        final = list(latest.values())
        got = compute_stats(job).to_dict()
        assert got["ok"] + got["failed"] == len(final) == 120
        assert got["ok"] == sum(r["status"] == "ok" for r in final)
        assert got["pending"] == 300 - 120
        assert got["rows"] == 300
        assert got["complete"] is False
        assert got["output_tokens"] == sum(r["output_tokens"] for r in final)
        assert got["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in final))
        assert got["read_from"] == "3 part files"

    def test_parts_over_stale_results(self, tmp_path: Path) -> None:
        """A resumed job: the parts are the truth, results.parquet of the earlier run is not read."""
        rng = random.Random(5)
        first = [make_row(i, rng, status="error") for i in range(40)]
        rerun = [make_row(i, rng, status="ok") for i in range(30, 60)]
        job = write_job(tmp_path / "job", [], input_rows=80, results=first, parts=[first, rerun])
        got = compute_stats(job)
        assert (got.ok, got.failed, got.pending) == (30, 30, 20)
        assert got.read_from == "2 part files"

    def test_index_column_is_internal(self, tmp_path: Path) -> None:
        """The engine's _index column is not offered as a --by column."""
        rng = random.Random(5)
        job = write_job(tmp_path / "job", [], parts=[[make_row(i, rng) for i in range(5)]])
        with pytest.raises(SpecError) as info:
            compute_stats(job, by="_index")
        assert "_index" not in str(info.value).partition("available:")[2]

    def test_small_batches_same_figures(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Figures do not depend on the batch size the files are streamed in (partial sums merge)."""
        rng = random.Random(9)
        first = [make_row(i, rng) for i in range(0, 90)]
        rerun = [make_row(i, rng, status="ok") for i in range(40, 70)]
        job = write_job(tmp_path / "job", [], input_rows=100, parts=[first, rerun])
        whole = compute_stats(job, by="team").to_dict()
        monkeypatch.setattr(stats_module, "BATCH_ROWS", 7)
        batched = compute_stats(job, by="team").to_dict()
        assert batched == approx_tree(whole)

    def test_duplicate_ids_in_results_only(self, tmp_path: Path) -> None:
        """Without parts (and their _index), results.parquet rows are keyed by id, the last one wins."""
        rng = random.Random(11)
        rows = [make_row(i, rng, status="error") for i in range(10)]
        rows += [make_row(i, rng, status="ok") for i in range(5)]
        job = write_job(tmp_path / "job", rows)
        got = compute_stats(job)
        assert (got.rows, got.ok, got.failed) == (10, 5, 5)

    def test_state_only(self, tmp_path: Path) -> None:
        """A job that has started but committed nothing: everything pending, no figures."""
        job = write_job(tmp_path / "job", [], input_rows=10, results=None, parts=[])
        got = compute_stats(job).to_dict()
        assert (got["rows"], got["ok"], got["pending"], got["cost_usd"]) == (10, 0, 10, 0.0)
        assert got["latency_ms"]["p50"] is None

    def test_not_a_job(self, tmp_path: Path) -> None:
        """A directory without results or working files is not a job."""
        with pytest.raises(StateError, match="not a job directory"):
            compute_stats(tmp_path)


DESIGN_KEYS = {
    "rows",
    "ok",
    "failed",
    "pending",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cost_usd",
    "routes",
    "latency_ms",
    "price_table",
    "retries",
    "errors",
    "throughput",
    "lanes",
}


class TestCli:
    def test_json(self, job: Path) -> None:
        """stats --json prints exactly one JSON object with the DESIGN keys."""
        result = CliRunner().invoke(stats_command, [str(job), "--json", "--by", "team"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert set(data) >= DESIGN_KEYS
        assert {"p50", "p95", "p99"} <= set(data["latency_ms"])
        assert set(data["groups"]) == {"search", "ads", "support", "(null)"}
        assert data == json.loads(compute_stats(job, by="team").to_json())

    def test_table(self, job: Path) -> None:
        """Without --json, a readable summary naming routes, price table and groups."""
        result = CliRunner().invoke(stats_command, [str(job), "--by", "team"], terminal_width=160)
        assert result.exit_code == 0, result.output
        for text in ("ok", "pending", "p95", "bedrock-on-demand-2025-11", "us-west-2", "support"):
            assert text in result.output

    def test_group_values_are_shown_as_they_are(self, tmp_path: Path) -> None:
        """A --by value that looks like rich markup (`[bold]x[/bold]`) is printed literally, not styled."""
        rows = [make_row(i, random.Random(i), status="ok") | {"team": "[bold]x[/bold]"} for i in range(5)]
        job = write_job(tmp_path / "job", rows)
        result = CliRunner().invoke(stats_command, [str(job), "--by", "team"], terminal_width=160)
        assert result.exit_code == 0, result.output
        assert "[bold]x[/bold]" in result.output

    def test_not_a_job_exits_2(self, tmp_path: Path) -> None:
        """A directory that is not a job: exit 2 and one line."""
        result = CliRunner().invoke(stats_command, [str(tmp_path), "--json"])
        assert result.exit_code == 2
        assert result.stdout == ""
        assert "not a job directory" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1

    def test_unknown_by_exits_2(self, job: Path) -> None:
        """An unknown --by column: exit 2 and the list of columns."""
        result = CliRunner().invoke(stats_command, [str(job), "--by", "nope"])
        assert result.exit_code == 2
        assert "available:" in result.stderr

    def test_bad_prices_exits_2(self, tmp_path: Path, job: Path) -> None:
        """A bad --prices file: exit 2 naming the file and key."""
        path = tmp_path / "bad.toml"
        path.write_text('[models."x"]\ninput = -1\n', encoding="utf-8")
        result = CliRunner().invoke(stats_command, [str(job), "--prices", str(path)])
        assert result.exit_code == 2
        assert 'models."x".input' in result.stderr


class TestOutputFit:
    def _job(self, tmp_path: Path, outputs: Sequence[int], *, cut: int = 0, max_tokens: int = 1000) -> Path:
        rng = random.Random(3)
        rows = []
        for i, length in enumerate(outputs):
            row = make_row(i, rng, status="ok")
            row["model_id"], row["region"], row["lane"] = ROUTES[0]
            row["output_tokens"] = length
            row["stop_reason"] = "max_tokens" if i < cut else "end_turn"
            rows.append(row)
        job = write_job(tmp_path / "job", rows, input_rows=len(rows))
        (job / "_job" / "spec.json").write_text(json.dumps({"request": {"max_tokens": max_tokens}}))
        return job

    def test_reserved_but_unused_quota_per_route(self, tmp_path: Path) -> None:
        """Each answer leaves max_tokens - output_tokens of its reservation unused; the route sums them."""
        stats = compute_stats(self._job(tmp_path, [100, 200, 300], max_tokens=1000))
        (fit,) = stats.output_fit.values()
        assert (fit.answers, fit.reserved_unused) == (3, 900 + 800 + 700)

    def test_suggests_the_max_tokens_that_keeps_99_9_percent_whole(self, tmp_path: Path) -> None:
        """Of 2,000 answers, the suggestion is the length 99.9 % of them stay within."""
        outputs = [100] * 1990 + [150] * 8 + [900, 950]
        stats = compute_stats(self._job(tmp_path, outputs))
        (fit,) = stats.output_fit.values()
        assert fit.suggested_max_tokens == 150
        assert stats.to_dict()["output_fit"][next(iter(stats.output_fit))]["suggested_max_tokens"] == 150

    def test_answers_cut_at_max_tokens_say_it_is_too_low(self, tmp_path: Path) -> None:
        """When more than 0.1 % stopped at max_tokens, no lower value is suggested."""
        stats = compute_stats(self._job(tmp_path, [1000] * 10 + [100] * 90, cut=10, max_tokens=1000))
        (fit,) = stats.output_fit.values()
        assert fit.suggested_max_tokens is None
        assert fit.cut_off == 10

    def test_the_terminal_view_names_the_figures(self, tmp_path: Path) -> None:
        """`stats` prints, per route, the unused reservation and the max_tokens that would fit."""
        from runner.cli.stats import output_fit_lines

        (line,) = output_fit_lines(compute_stats(self._job(tmp_path, [100, 200, 300])))
        assert "max_tokens 1,000 reserved 2,400 quota tokens no answer used" in line
        assert "max_tokens = 300 would have kept 99.9 % whole" in line
