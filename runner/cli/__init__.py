"""The ``bedrock-batch`` command line: one thin click group; each subcommand lives in its own module.

Subcommands parse arguments and call library functions (``run_job``, ``compute_stats``, ...); the work
itself never happens here. Exit codes are the DESIGN.md contract and have names in ``runner.exit_codes``.

The group imports a subcommand's module only when that subcommand runs (:class:`LazyGroup`), and each
module imports what its command needs, so ``bedrock-batch --help`` loads click alone and ``status``
never loads aioboto3 (``python -m bench startup`` measures it; tests/integration/test_cli_startup.py
keeps the heavy packages out).
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import NamedTuple

import click

from runner import __version__
from runner.exit_codes import EXIT_INTERRUPTED


class Subcommand(NamedTuple):
    """Where a subcommand lives, and the one line ``bedrock-batch --help`` shows for it."""

    target: str
    """``module:attribute`` of the click command."""
    summary: str
    """The first sentence of the command's help (a test keeps the two equal)."""


COMMANDS: dict[str, Subcommand] = {
    "emulator": Subcommand(
        "runner.emulator.cli:emulator_command",
        "Serve a local Amazon Bedrock (runtime, control plane, faults) until stopped.",
    ),
    "models": Subcommand(
        "runner.cli.models:models_command",
        "The Claude models on Bedrock: ids, profiles, limits, prices, what the account sees, and whether "
        "model invocation logging is on in each region.",
    ),
    "run": Subcommand(
        "runner.cli.run:run_command",
        "Run the job in SPEC.toml, or resume it: rerunning the same command after a crash or Ctrl-C "
        "continues where it stopped and never pays twice for a row that is done.",
    ),
    "stats": Subcommand(
        "runner.cli.stats:stats_command",
        "Usage statistics of the job in DIR: rows, tokens, cost per route, latency, errors.",
    ),
    "status": Subcommand(
        "runner.cli.status:status_command",
        "Rows done / failed / pending in a job directory, and whether the job can be resumed.",
    ),
}


def load_command(name: str) -> click.Command:
    """Import the module of subcommand ``name`` and return its click command."""
    module, _, attribute = COMMANDS[name].target.partition(":")
    command = getattr(importlib.import_module(module), attribute)
    assert isinstance(command, click.Command)
    return command


def shorten(text: str, limit: int) -> str:
    """``text`` cut at a word to fit ``limit`` characters, with "..." when it was cut (click's way)."""
    if len(text) <= limit:
        return text
    return text[: max(1, limit - 3)].rsplit(" ", 1)[0].rstrip(",:;") + "..."


class LazyGroup(click.Group):
    """A click group whose subcommands are imported when they run, not when the group is built."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load_command(cmd_name) if cmd_name in COMMANDS else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help`` from :data:`COMMANDS`, without importing any subcommand."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [(name, shorten(COMMANDS[name].summary, limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="bedrock-batch")
def cli() -> None:
    """Run large prompt datasets through Claude on Amazon Bedrock: quota-aware, resumable, costed."""


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
    imported when their command runs, inside the handler.
    """
    try:
        with interrupts_exit_130():
            cli.main(args=argv, prog_name="bedrock-batch", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int | None) else 1


if __name__ == "__main__":
    sys.exit(main())
