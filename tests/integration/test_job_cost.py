"""Cost before and during a run: `run --estimate` calls nothing, `max_cost_usd` stops spending.

Real aioboto3 against the emulator; the price table is the built-in one.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from runner.emulator import EmulatorThread
from runner.estimate import estimate_job
from runner.exit_codes import EXIT_OK, EXIT_ROWS_FAILED
from runner.job import run_job
from runner.pricing import PriceTable
from runner.request import RequestBuilder
from runner.types import Usage
from tests.helpers import GLOBAL_HAIKU, invoke_calls, make_spec, read_results, spec_data, write_prompts


class TestEstimate:
    def test_estimate_calls_nothing_and_adds_up(self, tmp_path: Path, emu: EmulatorThread) -> None:
        """The estimate sends no request, and its figures are the rows' own estimates summed and priced."""
        data = write_prompts(tmp_path / "in.parquet", 40)
        spec = make_spec(tmp_path, spec_data(data, tmp_path / "out", emu.url))
        estimate = estimate_job(spec)
        assert invoke_calls(emu.counters()) == 0
        builder = RequestBuilder(spec)
        rows = pq.read_table(data).to_pylist()
        expected_input = sum(builder.build(r).estimated_input_tokens for r in rows)
        assert (estimate.rows, estimate.rows_to_send) == (40, 40)
        assert estimate.input_tokens == expected_input
        assert estimate.max_output_tokens == 40 * 32
        prices = PriceTable.load()
        assert estimate.cost_high_usd == pytest.approx(
            prices.cost(GLOBAL_HAIKU, Usage(input_tokens=expected_input, output_tokens=40 * 32))
        )
        assert estimate.cost_low_usd < estimate.cost_high_usd

    def test_estimate_of_a_half_done_job_counts_what_is_left(
        self, tmp_path: Path, emu: EmulatorThread
    ) -> None:
        """Rows already done are not in the estimate: it is the cost of finishing."""
        data = write_prompts(tmp_path / "in.parquet", 30)
        spec = make_spec(tmp_path, spec_data(data, tmp_path / "out", emu.url))
        run_job(spec, limit=10, handle_signals=False, progress=False)
        assert estimate_job(spec).rows_to_send == 20

    def test_batch_mode_is_priced_at_the_batch_rate(self, tmp_path: Path, emu: EmulatorThread) -> None:
        """A batch-mode estimate costs half the on-demand one."""
        data = write_prompts(tmp_path / "in.parquet", 10)
        on_demand = estimate_job(make_spec(tmp_path, spec_data(data, tmp_path / "out", emu.url)))
        batch = estimate_job(
            make_spec(
                tmp_path,
                spec_data(
                    data,
                    tmp_path / "out",
                    emu.url,
                    job={"mode": "batch"},
                    batch={"role_arn": "arn:aws:iam::1:role/r", "s3_uri": "s3://b/p"},
                ),
                name="batch.toml",
            )
        )
        assert batch.cost_high_usd == pytest.approx(on_demand.cost_high_usd / 2)


class TestCostCap:
    def test_cap_stops_spending_and_a_rerun_with_a_higher_cap_continues(
        self, tmp_path: Path, emu: EmulatorThread
    ) -> None:
        """With a cap worth a few rows the run stops (exit 1, rows pending); a higher cap finishes the job."""
        data = write_prompts(tmp_path / "in.parquet", 60)
        out = tmp_path / "out"
        one_row = estimate_job(make_spec(tmp_path, spec_data(data, out, emu.url))).cost_high_usd / 60
        cap = one_row * 10
        capped = make_spec(tmp_path, spec_data(data, out, emu.url, limits={"max_cost_usd": cap}))
        first = run_job(capped, handle_signals=False, progress=False)
        assert first.exit_code == EXIT_ROWS_FAILED
        assert first.stopped == "max_cost_usd reached"
        assert 0 < first.progress.ok < 60
        assert first.progress.pending == 60 - first.progress.ok
        spent = pc.sum(read_results(out).column("cost_usd")).as_py()
        assert spent <= cap
        billed = invoke_calls(emu.counters())
        assert billed == first.progress.ok

        raised = make_spec(
            tmp_path, spec_data(data, out, emu.url, limits={"max_cost_usd": one_row * 1000}), "b.toml"
        )
        second = run_job(raised, handle_signals=False, progress=False)
        assert second.exit_code == EXIT_OK
        assert second.progress.ok == 60
        assert invoke_calls(emu.counters()) == 60  # no row paid twice across the two runs
