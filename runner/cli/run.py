"""``bedrock-batch run``: parse flags, call ``run_job``, print one summary.

The engine (``runner.job``: aioboto3, pyarrow, structlog) is imported when a job runs, not when the
command is parsed, so ``run --help`` and a spec error answer at once.
"""

from __future__ import annotations

import contextlib
import json
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runner.awsconfig import use_profile
from runner.cli import interrupts_exit_130
from runner.errors import BatchError, JobEnvironmentError, leaf_error
from runner.exit_codes import (
    EXIT_ENVIRONMENT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_ROWS_FAILED,
    EXIT_SPEC_INVALID,
)
from runner.spec import JobSpec, load_spec, resolve_spec

if TYPE_CHECKING:
    from runner.estimate import Estimate
    from runner.job import JobReport


def run_job(spec: JobSpec, **kwargs: Any) -> JobReport:
    """``runner.job.run_job``, imported on first use (the seam the CLI tests replace)."""
    from runner.job import run_job as run

    return run(spec, **kwargs)


def estimate_job(spec: JobSpec, **kwargs: Any) -> Estimate:
    """``runner.estimate.estimate_job``, imported on first use."""
    from runner.estimate import estimate_job as estimate

    return estimate(spec, **kwargs)


@contextlib.contextmanager
def fail_cleanly(debug: bool, *, internal: bool = False) -> Iterator[None]:
    """Turn a ``BatchError`` into one line on stderr and its exit code (2, or 3 for an environment
    failure after paid calls); a traceback only with ``--debug``. An exception group is reported as the
    error it wraps, never as a group. With ``internal``, any other exception is one line and exit 3 too
    (``run``: the job directory is consistent whatever broke, so a rerun resumes).
    """
    try:
        yield
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise  # click's own: usage errors print as click prints them
    except (Exception, BaseExceptionGroup) as caught:
        exc = leaf_error(caught)
        if isinstance(exc, KeyboardInterrupt):
            click.echo("\ninterrupted: rerun the same command to resume", err=True)
            sys.exit(EXIT_INTERRUPTED)
        if not isinstance(exc, Exception):
            raise exc from None  # a cancellation inside a group
        if debug:
            traceback.print_exception(exc)
        if isinstance(exc, JobEnvironmentError):
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_ENVIRONMENT)
        if isinstance(exc, BatchError):
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_SPEC_INVALID)
        if not internal:
            raise
        click.echo(
            f"error: internal error ({type(exc).__name__}: {str(exc)[:200]}); the job directory is "
            "consistent: rerun the same command to resume, and report this with the output of --debug",
            err=True,
        )
        sys.exit(EXIT_ENVIRONMENT)


@click.command(context_settings={"show_default": True})
@click.argument("spec_path", metavar="SPEC.toml", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--input", "input_", metavar="PATH", help="Override [job] input (file, directory or s3:// URI)."
)
@click.option("--output", metavar="DIR", help="Override [job] output, the job directory.")
@click.option("--endpoint-url", metavar="URL", help="Send every Bedrock call here (e.g. the emulator).")
@click.option(
    "--region",
    metavar="R[,R...]",
    help="Override [model] region, the home region (else AWS_REGION, ...); several, comma-separated, "
    "override [model] regions (each its own quota).",
)
@click.option(
    "--profile", metavar="NAME", help="AWS profile of ~/.aws/config for every AWS call (AWS_PROFILE)."
)
@click.option(
    "--max-in-flight", type=click.IntRange(min=1), metavar="N", help="Override [limits] max_in_flight."
)
@click.option("--limit", type=click.IntRange(min=0), metavar="N", help="Only the first N input rows.")
@click.option("--retry-failed", is_flag=True, help="Also rerun error rows whose error was not retryable.")
@click.option("--force", is_flag=True, help="Resume even though the input's ids changed since the job began.")
@click.option("--preflight/--no-preflight", default=None, help="One tiny request per route first [spec].")
@click.option(
    "--batch", is_flag=True, help="Bedrock batch inference first (mode = 'batch', half price); docs/batch.md."
)
@click.option("--estimate", is_flag=True, help="Print expected tokens and cost from the input; call nothing.")
@click.option("--json", "as_json", is_flag=True, help="With --estimate: one JSON object instead of text.")
@click.option(
    "--emulate",
    is_flag=True,
    help="Dry run against a built-in emulator instead of AWS (no cost), into <output>-emulated.",
)
@click.option(
    "--grace", "grace_s", type=float, default=30.0, help="Seconds in-flight requests get after Ctrl-C."
)
@click.option("--progress/--no-progress", default=None, help="Live progress bar [on a terminal].")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info")
@click.option("--debug", is_flag=True, help="Print tracebacks.")
def run_command(
    spec_path: Path,
    input_: str | None,
    output: str | None,
    endpoint_url: str | None,
    region: str | None,
    profile: str | None,
    max_in_flight: int | None,
    limit: int | None,
    retry_failed: bool,
    force: bool,
    preflight: bool | None,
    batch: bool,
    estimate: bool,
    as_json: bool,
    emulate: bool,
    grace_s: float,
    progress: bool | None,
    log_level: str,
    debug: bool,
) -> None:
    """Run the job in SPEC.toml, or resume it: rerunning the same command after a crash or Ctrl-C
    continues where it stopped and never pays twice for a row that is done.

    Paths in the spec (input, output, prices) are relative to the spec file; --input and --output
    to the working directory. Region: --region or [model] region, else AWS_REGION, AWS_DEFAULT_REGION,
    the profile's region, us-east-1.

    Exit codes: 0 every row ok, 1 finished with failed (or pending) rows, 2 bad spec, input, AWS
    profile or preflight (nothing was paid), 3 the disk, output or input failed after paid calls
    began (resumable), 130 interrupted (resumable).
    """
    if as_json and not estimate:
        raise click.UsageError("--json goes with --estimate (a run prints its summary on stderr)")
    with fail_cleanly(debug, internal=True), interrupts_exit_130():
        use_profile(profile)
        spec = load_spec(spec_path)
        spec = resolve_spec(
            spec,
            input=input_,
            output=output,
            endpoint_url=endpoint_url,
            max_in_flight=max_in_flight,
            region=region,
        )
        if batch:
            spec = resolve_spec(spec, mode="batch")
        if estimate:
            figures = estimate_job(spec, limit=limit, retry_failed=retry_failed)
            if as_json:
                click.echo(json.dumps(figures.to_dict()))
            else:
                for line in figures.lines():
                    click.echo(line)
            sys.exit(EXIT_OK)
        if emulate and output is None:
            spec = resolve_spec(spec, output=emulated_output(spec.job.output))
        with _maybe_emulator(emulate, batch=spec.job.mode == "batch", output=spec.job.output) as url:
            if url:
                spec = resolve_spec(spec, endpoint_url=url)
            report = run_job(
                spec,
                limit=limit,
                retry_failed=retry_failed,
                force=force,
                preflight=preflight,
                progress=progress,
                grace_s=grace_s,
                log_level=log_level,
                emulated=emulate,
            )
    _print_summary(report)
    sys.exit(report.exit_code)


EMULATED_SUFFIX = "-emulated"


def emulated_output(output: str) -> str:
    """Where ``run --emulate`` writes when no ``--output`` is given: beside the real job directory,
    never in it (``out/reviews`` -> ``out/reviews-emulated``)."""
    return output.rstrip("/") + EMULATED_SUFFIX


@contextlib.contextmanager
def _maybe_emulator(enabled: bool, *, batch: bool = False, output: str = "") -> Iterator[str | None]:
    if not enabled:
        yield None
        return
    from runner.emulator import EmulatorConfig, EmulatorThread
    from runner.storage import s3_endpoint_url

    # Batch jobs need an S3 server the emulator can read: the one the runner uses (docs/batch.md).
    s3 = s3_endpoint_url()
    if batch and not s3:
        raise click.UsageError(
            "--emulate with mode = 'batch' needs a local S3 server: set AWS_ENDPOINT_URL_S3 (docs/batch.md)"
        )
    settings = {"s3_endpoint_url": s3 or "", "submitted_s": 0.5, "duration_s": 2.0}
    with EmulatorThread(EmulatorConfig.from_dict({"batch": settings})) as emulator:
        click.echo(
            f"dry run: emulator at {emulator.url}, results in {output} (no AWS calls, no cost)", err=True
        )
        yield str(emulator.url)


def _print_summary(report: JobReport) -> None:
    from runner.pool import STOP_COST_CAP

    p, c = report.progress, report.counters
    rate = (c.ok + c.failed) / report.elapsed_s if report.elapsed_s else 0.0
    lines = [
        f"{p.rows:,} rows: {p.ok:,} ok, {p.failed:,} failed, {p.pending:,} pending"
        + (f" ({report.recovered_rows:,} recovered from the journal)" if report.recovered_rows else ""),
        f"this run: {c.ok + c.failed:,} rows in {report.elapsed_s:.1f} s ({rate:,.1f} rows/s), "
        f"{c.input_tokens:,} input + {c.output_tokens:,} output tokens, ${c.cost_usd:,.4f}, "
        f"{c.throttles:,} throttled attempts",
        f"results: {report.output / 'results.parquet'}",
    ]
    if report.exit_code == EXIT_INTERRUPTED:
        lines.append("interrupted: rerun the same command to resume")
    elif report.stopped == STOP_COST_CAP:
        lines.append(f"stopped early: {report.stopped}; rerun with a higher cap to continue")
    elif report.stopped:
        lines.append(f"stopped early: {report.stopped}; rerun the same command to continue")
    elif report.exit_code == EXIT_ROWS_FAILED and p.failed_retryable:
        lines.append(
            f"{p.failed_retryable:,} failed rows are retryable: rerun the same command to retry them"
        )
    for line in lines:
        click.echo(line, err=True)
