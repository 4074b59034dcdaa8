"""The ``bedrock-batch`` command line: one thin click group; each subcommand lives in its own module.

Subcommands parse arguments and call library functions (``run_job``, ``compute_stats``, ...); the work
itself never happens here. Exit codes are the DESIGN.md contract and have names in ``runner.exit_codes``.
"""

from __future__ import annotations

import sys

import click

from runner import __version__


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


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    _register()
    try:
        cli.main(args=argv, prog_name="bedrock-batch", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int | None) else 1


if __name__ == "__main__":
    sys.exit(main())
