"""``bedrock-batch status DIR``: rows done, failed and pending in a job directory, and what to do next.

It reads the job directory only (the newest outcome per row, the batch lane's records), so it answers
while a job runs, after Ctrl-C and after a crash, without loading the engine or any AWS client.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runner import __version__
from runner.errors import BatchError
from runner.exit_codes import EXIT_OK, EXIT_ROWS_FAILED, EXIT_SPEC_INVALID

if TYPE_CHECKING:
    from runner.awsconfig import Setting
    from runner.state import JobDir


@click.command(context_settings={"show_default": True})
@click.argument("job_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@click.option(
    "--region", metavar="R", help="The home region a rerun would use [the job's, else AWS_REGION, ...]."
)
@click.option("--profile", metavar="NAME", help="AWS profile of ~/.aws/config (AWS_PROFILE), for the region.")
def status_command(job_dir: Path, as_json: bool, region: str | None, profile: str | None) -> None:
    """Rows done / failed / pending in a job directory, and whether the job can be resumed.

    Exit codes: 0 complete (every row has an outcome) with every row ok, 1 rows failed or still
    pending, 2 DIR is not a job directory (or a bad --profile).

    It also names the home region a rerun would call Bedrock from (--region, else the job's
    [model] region, else AWS_REGION, AWS_DEFAULT_REGION, the profile's region, us-east-1).
    """
    from runner import awsconfig
    from runner.batch.state import lane_status
    from runner.state import JobDir

    try:
        awsconfig.use_profile(profile)
        job = JobDir(job_dir)
        p = job.progress()
        lanes = lane_status(job)
        home = awsconfig.resolve_region(region) if region else _job_region(job)
    except BatchError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_SPEC_INVALID) from None
    info: dict[str, Any] = {
        "version": __version__,
        "rows": p.rows,
        "ok": p.ok,
        "failed": p.failed,
        "failed_retryable": p.failed_retryable,
        "pending": p.pending,
        "running": p.running,
        "resumable": not p.running and (p.pending > 0 or p.failed_retryable > 0),
        "complete": p.complete,
        "region": home.value,
        "region_source": home.source,
        "emulated": job.is_emulated(),
        **lanes,
    }
    if as_json:
        click.echo(json.dumps(info))
    else:
        emulated = " (a dry run: emulated answers, run --emulate)" if info["emulated"] else ""
        click.echo(f"{job_dir}: {p.rows:,} rows{emulated}")
        click.echo(f"  done     {p.ok:,}")
        click.echo(f"  failed   {p.failed:,} ({p.failed_retryable:,} retryable)")
        click.echo(f"  pending  {p.pending:,}")
        click.echo(f"  region   {home.value} ({home.source})")
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
        elif p.failed:
            click.echo(f"  complete, {p.failed:,} rows failed (`run --retry-failed` reruns them)")
        else:
            click.echo("  complete")
    sys.exit(EXIT_OK if p.complete and not p.failed else EXIT_ROWS_FAILED)


def _job_region(job: JobDir) -> Setting:
    """The home region of the job's frozen spec, else what the environment and profile say."""
    from runner import awsconfig

    try:
        spec = json.loads(job.spec_file.read_text(encoding="utf-8"))
        region = str(spec.get("model", {}).get("region") or "")
    except (OSError, ValueError, AttributeError):
        region = ""
    return awsconfig.resolve_region(region, source="the job's [model] region")
