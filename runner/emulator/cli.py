"""``bedrock-batch emulator`` / ``python -m runner.emulator``: serve the local Bedrock until stopped.

The click command is what the main CLI mounts (``group.add_command(emulator_command, "emulator")``);
:func:`run_emulator` is the blocking call under it, for anyone who builds the config in code. Flags
override the ``[defaults]`` of the ``--faults`` file. When the socket accepts connections it prints
exactly one line to stdout, ``bedrock-batch emulator listening on http://127.0.0.1:PORT``, which
scripts and tests wait for (with ``--port 0`` it is how they learn the port).
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click
import structlog

from runner import catalog
from runner.emulator.config import QUOTA_SHAPES, ConfigError, EmulatorConfig
from runner.emulator.server import Emulator
from runner.errors import SpecError

READY_PREFIX = "bedrock-batch emulator listening on "


def _logger() -> Any:
    """structlog for the start and stop lines only, on stderr so stdout keeps the one ready line."""
    if structlog.is_configured():
        return structlog.get_logger("runner.emulator")
    return structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _serve(config: EmulatorConfig, host: str, port: int, ready_file: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log = _logger()
    emulator = Emulator(config, host=host, port=port)
    await emulator.start()
    try:
        if ready_file is not None:  # before the line: whoever saw the line may read the file
            tmp = ready_file.with_name(ready_file.name + ".tmp")
            tmp.write_text(emulator.url + "\n")
            os.replace(tmp, ready_file)
        print(READY_PREFIX + emulator.url, flush=True)
        log.info("emulator.started", url=emulator.url, seed=config.seed, routes=len(config.routes))
        await stop.wait()
    finally:
        await emulator.aclose()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        counters = emulator.counters()
        log.info(
            "emulator.stopped",
            requests=counters["total_requests"],
            billed=counters["billed_requests"],
            internal_errors=counters["internal_errors"],
        )


def run_emulator(
    config: EmulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    ready_file: str | Path | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly (blocking; runs its own event loop)."""
    if not is_loopback(host):
        _logger().warning(
            "emulator.exposed",
            host=host,
            note="the emulator has no authentication; anyone who can reach this address can use it",
        )
    asyncio.run(_serve(config or EmulatorConfig(), host, port, Path(ready_file) if ready_file else None))


def _output_tokens(value: str) -> Any:
    low, sep, high = value.partition("-")
    try:
        return {"min": int(low), "max": int(high)} if sep else int(low)
    except ValueError as exc:
        raise click.BadParameter("expected N or MIN-MAX, e.g. 20-60") from exc


def _quota_start(value: str) -> Any:
    """``full``, ``empty`` or a number: the config checks the range and names the key."""
    if value in ("full", "empty"):
        return value
    try:
        share = float(value)
    except ValueError:
        share = math.nan
    if not 0.0 <= share <= 1.0:
        raise click.BadParameter(
            "expected full, empty or a share between 0 and 1", param_hint="--quota-start"
        )
    return share


@click.command("emulator", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to bind; loopback unless you mean it."
)
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port."
)
@click.option(
    "--faults",
    "faults_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML fault file (docs/emulator.md); the flags below override its [defaults].",
)
@click.option("--seed", type=int, help="Seed of every random draw: the same seed replays the same scenario.")
@click.option(
    "--latency-ms", type=click.FloatRange(min=0), help="Base latency (the median with --latency-sigma)."
)
@click.option("--latency-sigma", type=click.FloatRange(min=0), help="Make latency lognormal with this sigma.")
@click.option("--per-output-token-ms", type=click.FloatRange(min=0), help="Extra time per output token.")
@click.option("--tpm", type=click.IntRange(min=0), help="Tokens-per-minute quota of every route (0: none).")
@click.option("--output-burndown", type=click.FloatRange(min=0), help="Quota tokens per output token.")
@click.option(
    "--quota-shape",
    type=click.Choice(QUOTA_SHAPES),
    help="How the quota refills: a rolling 60 s window (default), a continuously refilled bucket, or a "
    "fixed window (a counter per minute, reset at each minute boundary).",
)
@click.option(
    "--quota-start",
    metavar="full|empty|SHARE",
    help="Share of each route's quota available when it is created (default full).",
)
@click.option(
    "--quota-reset-s",
    type=click.FloatRange(0, 60, min_open=True),
    help="Fixed window only: seconds from a quota's creation to its first minute boundary (default 60).",
)
@click.option(
    "--throttle-rate", type=click.FloatRange(0, 1), help="Share of calls answered ThrottlingException."
)
@click.option(
    "--error-rate", type=click.FloatRange(0, 1), help="Share of calls answered InternalServerException."
)
@click.option("--cut-off-rate", type=click.FloatRange(0, 1), help="Share of answers cut off mid-body.")
@click.option("--slow-rate", type=click.FloatRange(0, 1), help="Share of answers delayed by --slow-ms.")
@click.option("--slow-ms", type=click.FloatRange(min=0), help="Delay of a slow answer.")
@click.option("--output-tokens", help="Answer length in tokens: N or MIN-MAX (capped by max_tokens).")
@click.option("--deny-global", is_flag=True, help="Answer AccessDeniedException for every global. profile.")
@click.option(
    "--s3-endpoint-url",
    metavar="URL",
    help="S3-compatible server batch inference jobs read and write (without it they are not run).",
)
@click.option(
    "--batch-duration-s", type=click.FloatRange(min=0), help="Seconds a batch job stays InProgress."
)
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the URL to this file once listening.",
)
@click.option(
    "--catalog",
    "catalog_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="User catalogue (TOML, docs/catalog.md) merged over the built-in one [$BEDROCK_BATCH_CATALOG].",
)
def emulator_command(
    host: str,
    port: int,
    faults_file: Path | None,
    seed: int | None,
    latency_ms: float | None,
    latency_sigma: float | None,
    per_output_token_ms: float | None,
    tpm: int | None,
    output_burndown: float | None,
    quota_shape: str | None,
    quota_start: str | None,
    quota_reset_s: float | None,
    throttle_rate: float | None,
    error_rate: float | None,
    cut_off_rate: float | None,
    slow_rate: float | None,
    slow_ms: float | None,
    output_tokens: str | None,
    deny_global: bool,
    s3_endpoint_url: str | None,
    batch_duration_s: float | None,
    ready_file: Path | None,
    catalog_file: Path | None,
) -> None:
    """Serve a local Amazon Bedrock (runtime, control plane, faults) until stopped.

    Point any boto3 / aioboto3 client at the printed URL with endpoint_url. Faults and counters can
    be changed and read while it runs under /_emulator/ (see docs/emulator.md).
    """
    try:
        catalog.activate(catalog_file)
    except SpecError as exc:
        raise click.BadParameter(str(exc), param_hint="--catalog") from exc
    try:
        config = EmulatorConfig.from_toml(faults_file) if faults_file else EmulatorConfig()
        defaults: dict[str, Any] = {
            key: value
            for key, value in {
                "per_output_token_ms": per_output_token_ms,
                "tpm": tpm,
                "output_burndown": output_burndown,
                "quota_shape": quota_shape,
                "quota_reset_s": quota_reset_s,
                "throttle_rate": throttle_rate,
                "error_rate": error_rate,
                "cut_off_rate": cut_off_rate,
                "slow_rate": slow_rate,
                "slow_ms": slow_ms,
            }.items()
            if value is not None
        }
        if latency_sigma is not None:
            if latency_ms is None:
                raise click.UsageError("--latency-sigma needs --latency-ms (the median)")
            defaults["latency"] = {"dist": "lognormal", "median_ms": latency_ms, "sigma": latency_sigma}
        elif latency_ms is not None:
            defaults["latency_ms"] = latency_ms
        if output_tokens is not None:
            defaults["output_tokens"] = _output_tokens(output_tokens)
        if quota_start is not None:
            defaults["quota_start"] = _quota_start(quota_start)
        patch: dict[str, Any] = {"defaults": defaults}
        if seed is not None:
            patch["seed"] = seed
        if deny_global:
            patch["routes"] = [{"profile": "global.*", "region": "*", "access_denied": True}]
        batch: dict[str, Any] = {}
        if s3_endpoint_url is not None:
            batch["s3_endpoint_url"] = s3_endpoint_url
        if batch_duration_s is not None:
            batch["duration_s"] = batch_duration_s
        if batch:
            patch["batch"] = batch
        config = config.merged(patch)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--faults") from exc
    try:
        run_emulator(config, host, port, ready_file)
    except OSError as exc:
        raise click.ClickException(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from exc


def main(argv: list[str] | None = None) -> int:
    """``python -m runner.emulator``: the click command outside a group; returns the exit code."""
    try:
        result = emulator_command.main(
            args=argv, prog_name="python -m runner.emulator", standalone_mode=False
        )
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        return 130
    return result if isinstance(result, int) else 0
