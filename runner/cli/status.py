"""``bedrock-batch status DIR``: rows done, failed and pending in a job directory, and what to do next.

It reads the job directory only (the newest outcome per row, the batch lane's records), so it answers
while a job runs, after Ctrl-C and after a crash, without loading the engine or any AWS client.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from runner.errors import BatchError
from runner.exit_codes import EXIT_OK, EXIT_SPEC_INVALID


@click.command(context_settings={"show_default": True})
@click.argument("job_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def status_command(job_dir: Path, as_json: bool) -> None:
    """Rows done / failed / pending in a job directory, and whether the job can be resumed."""
    from runner.batch.state import lane_status
    from runner.state import JobDir

    try:
        job = JobDir(job_dir)
        p = job.progress()
        lanes = lane_status(job)
    except BatchError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_SPEC_INVALID) from None
    info: dict[str, Any] = {
        "rows": p.rows,
        "ok": p.ok,
        "failed": p.failed,
        "failed_retryable": p.failed_retryable,
        "pending": p.pending,
        "running": p.running,
        "resumable": not p.running and (p.pending > 0 or p.failed_retryable > 0),
        "complete": p.pending == 0 and p.failed == 0,
        **lanes,
    }
    if as_json:
        click.echo(json.dumps(info))
    else:
        click.echo(f"{job_dir}: {p.rows:,} rows")
        click.echo(f"  done     {p.ok:,}")
        click.echo(f"  failed   {p.failed:,} ({p.failed_retryable:,} retryable)")
        click.echo(f"  pending  {p.pending:,}")
        click.echo("  lanes    " + ", ".join(f"{k} {v:,}" for k, v in lanes["lanes"].items()))
        if lanes["batch"] is not None:
            b = lanes["batch"]
            jobs = ", ".join(f"{n} {state}" for state, n in sorted(b["jobs"].items()))
            click.echo(
                f"  batch    {b['shards']:,} jobs ({jobs or 'none'}), {b['in_flight_records']:,} records "
                f"in flight, {b['to_on_demand']:,} sent on to on-demand"
            )
        if p.running:
            click.echo("  a runner is working on this job now")
        elif info["resumable"]:
            click.echo("  resumable: rerun the same `bedrock-batch run` command to continue")
        else:
            click.echo(
                "  complete" if info["complete"] else "  finished (use --retry-failed to rerun failed rows)"
            )
    sys.exit(EXIT_OK)
