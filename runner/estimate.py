"""``run --estimate``: what a job will use and cost, from the input alone, before any call.

Input tokens are estimated from the text (the same estimate admission control reserves), output is
bounded by each row's ``max_tokens``, so the figure is a range: the low end assumes no output at all,
the high end assumes every row writes its full ``max_tokens``. Each row is priced on its own, so a row
whose prompt goes over the long-context threshold is priced at the long-context rates. Rows already
done in the job directory are not counted, so an estimate of a half-finished job is the cost of
finishing it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from runner import __version__
from runner.pricing import PriceTable
from runner.routing import job_routes
from runner.source import Source
from runner.spec import JobSpec
from runner.state import JobDir
from runner.types import Usage


@dataclass(frozen=True, slots=True)
class Estimate:
    """Tokens and cost of the rows a run would send."""

    rows: int
    rows_to_send: int
    bad_rows: int
    input_tokens: int
    max_output_tokens: int
    model_id: str
    lane: str
    cost_low_usd: float
    cost_high_usd: float
    price_table: str
    cap_usd: float

    def to_dict(self) -> dict[str, Any]:
        """The ``run --estimate --json`` object (with the ``version`` of bedrock-batch that wrote it)."""
        return {"version": __version__, **dataclasses.asdict(self)}

    def lines(self) -> list[str]:
        out = [
            f"{self.rows_to_send:,} of {self.rows:,} rows would be sent"
            + (
                f" ({self.bad_rows:,} rows cannot become requests and would be error rows)"
                if self.bad_rows
                else ""
            ),
            f"input tokens  ~{self.input_tokens:,} (estimated from the text)",
            f"output tokens  at most {self.max_output_tokens:,} (max_tokens per row)",
            f"cost on {self.model_id} ({self.lane.replace('_', '-')}): ${self.cost_low_usd:,.2f} (no output) "
            f"to ${self.cost_high_usd:,.2f} (every row at max_tokens), price table {self.price_table}",
        ]
        if self.cap_usd:
            verdict = "within" if self.cost_high_usd <= self.cap_usd else "may pass"
            out.append(f"max_cost_usd ${self.cap_usd:,.2f}: the worst case {verdict} the cap")
        return out


def estimate_job(spec: JobSpec, *, limit: int | None = None, retry_failed: bool = False) -> Estimate:
    """Read the input (and the job directory, if any) and price what a run would send; no calls."""
    routes = job_routes(spec)
    prices = PriceTable.load(spec.output.prices or None)
    source = Source(spec, limit=limit)
    job = JobDir(spec.job.output)
    done = job.done_keys(retry_failed=retry_failed) if job.exists() else set()
    model_id = routes[0].model_id
    # Batch mode prices at the batch rate: the leftovers it finishes on-demand are too few to matter.
    lane = "batch" if spec.job.mode == "batch" else "on_demand"
    sent = bad = input_tokens = output_tokens = 0
    low = high = 0.0
    for batch in source.records(done):
        for record in batch:
            if record.body is None:
                bad += 1
                continue
            sent += 1
            input_tokens += record.estimated_input_tokens
            output_tokens += record.max_tokens
            # Priced row by row: a row over the long-context threshold costs more per token.
            low += prices.cost(model_id, Usage(input_tokens=record.estimated_input_tokens), lane=lane)
            high += prices.cost(
                model_id,
                Usage(input_tokens=record.estimated_input_tokens, output_tokens=record.max_tokens),
                lane=lane,
            )
    return Estimate(
        rows=source.fingerprint().rows,
        rows_to_send=sent,
        bad_rows=bad,
        input_tokens=input_tokens,
        max_output_tokens=output_tokens,
        model_id=model_id,
        lane=lane,
        cost_low_usd=low,
        cost_high_usd=high,
        price_table=prices.name,
        cap_usd=spec.limits.max_cost_usd,
    )
