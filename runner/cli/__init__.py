"""The ``bedrock-batch`` command line: one thin click group; each subcommand lives in its own module.

Subcommands parse arguments and call library functions (``run_job``, ``compute_stats``, ...); the work
itself never happens here. Exit codes are the DESIGN.md contract and have names in ``runner.exit_codes``.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

import click

from runner import __version__
from runner.exit_codes import EXIT_INTERRUPTED


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bedrock-batch")
def cli() -> None:
    """Run large prompt datasets through Claude on Amazon Bedrock: quota-aware, resumable, costed."""


def _register() -> None:
    from runner.cli.run import run_command, status_command
    from runner.emulator import emulator_command

    cli.add_command(run_command, "run")
    cli.add_command(status_command, "status")
    cli.add_command(emulator_command, "emulator")
    from runner.cli.models import models_command
    from runner.cli.stats import stats_command

    cli.add_command(stats_command, "stats")
    cli.add_command(models_command, "models")


@contextlib.contextmanager
def interrupts_exit_130() -> Iterator[None]:
    """Ctrl-C or SIGTERM before a command watches signals itself exits 130 (interrupted, resumable).

    Without this, Ctrl-C there was click's "Aborted!" with exit 1 (which means "rows failed") and
    SIGTERM killed the process outright (143). SIGTERM is turned into SIGINT, so asyncio cancels a
    run and ``run_job``'s cleanup runs; the job directory is consistent and the same command resumes.
    Signal handlers belong to the main thread: elsewhere (a test calling ``main``) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        yield
    except KeyboardInterrupt:
        click.echo("\ninterrupted: rerun the same command to resume", err=True)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code.

    SIGTERM and Ctrl-C exit 130 from the first line on: the commands' modules (pyarrow, aioboto3) are
    imported inside the handler, and ``import runner`` imports none of them.
    """
    try:
        with interrupts_exit_130():
            _register()
            cli.main(args=argv, prog_name="bedrock-batch", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int | None) else 1


if __name__ == "__main__":
    sys.exit(main())
