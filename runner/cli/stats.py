"""``bedrock-batch stats DIR``: what a job used and cost, on a terminal, as JSON, or as an HTML report.

It reads the job directory only (``runner.stats``), so it works while the job runs, after Ctrl-C and
after a crash. ``--json`` writes exactly one JSON object to stdout and nothing else, for scripts;
notes go to stderr. A directory that is not a job, an unknown ``--by`` column or a bad ``--prices``
file is one line on stderr and exit 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import click

from runner.errors import BatchError
from runner.exit_codes import EXIT_SPEC_INVALID

if TYPE_CHECKING:  # imported when the command runs: `stats --help` loads neither pyarrow nor rich
    from rich.console import Console
    from rich.table import Table

    from runner.stats import JobStats, Tally

WIDE = 180
"""Columns of the table view when stdout is not a terminal (nothing to fit, so nothing to wrap)."""


@click.command("stats")
@click.argument("job_dir", metavar="DIR", type=click.Path(path_type=Path))
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object (the stats contract) and nothing else."
)
@click.option(
    "--by", metavar="COLUMN", help="Group rows, tokens and cost by this column (e.g. a kept team column)."
)
@click.option(
    "--html",
    "html_path",
    metavar="FILE",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write a self-contained HTML report with charts (needs the 'report' extra).",
)
@click.option(
    "--prices",
    metavar="FILE",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Re-price every row from its tokens with this price table instead of the recorded cost.",
)
def stats_command(
    job_dir: Path, as_json: bool, by: str | None, html_path: Path | None, prices: Path | None
) -> None:
    """Usage statistics of the job in DIR: rows, tokens, cost per route, latency, errors."""
    from rich.console import Console

    from runner.pricing import PriceTable
    from runner.report import write_html
    from runner.stats import collect

    try:
        table = PriceTable.load(prices) if prices is not None else None
        collected = collect(job_dir, by=by, prices=table)
        if html_path is not None:
            write_html(html_path, collected)
    except BatchError as exc:
        click.echo(f"error: {' '.join(str(exc).split())}", err=True)
        raise SystemExit(EXIT_SPEC_INVALID) from None

    stats = collected.stats
    if as_json:
        click.echo(stats.to_json())
    else:
        console = Console(highlight=False, markup=False, emoji=False)  # plain cells: no markup to parse
        if not console.is_terminal:  # a file or a pipe: long route ids read better unwrapped
            console = Console(highlight=False, markup=False, emoji=False, width=max(console.width, WIDE))
        render(stats, console)
    if html_path is not None:
        click.echo(f"report written to {html_path}", err=True)


def render(stats: JobStats, console: Console) -> None:
    """The terminal view: overview, routes, errors and groups, each a rich table."""
    from rich.table import Table

    from runner.report import fmt_int, overview_rows

    overview = Table(title="Job statistics", show_header=False, title_justify="left")
    overview.add_column(style="bold")
    overview.add_column()
    for label, value in overview_rows(stats):
        overview.add_row(label, value)
    console.print(overview)
    if stats.routes:
        console.print(_tally_table("Routes", "route", stats.routes))
    if stats.unrouted:
        console.print(f"{fmt_int(stats.unrouted)} rows never reached a route (bad rows).")
    shares = stats.region_shares()
    if len(shares) > 1:
        console.print(
            "Regions: "
            + ", ".join(
                f"{region} {v['share']:.0%} ({fmt_int(v['rows'])} rows)" for region, v in shares.items()
            )
        )
    for line in output_fit_lines(stats):
        console.print(line)
    if stats.errors:
        errors = Table(title="Errors by type", title_justify="left")
        errors.add_column("error type")
        errors.add_column("rows", justify="right")
        for name, count in stats.errors.items():
            errors.add_row(name, fmt_int(count))
        console.print(errors)
    if stats.by is not None and stats.groups is not None:
        console.print(_tally_table(f"By {stats.by}", stats.by, stats.groups))


def output_fit_lines(stats: JobStats) -> list[str]:
    """Per route, what ``max_tokens`` reserved and the answers left unused, and what would fit."""
    from runner.report import fmt_int

    lines = []
    for route, fit in stats.output_fit.items():
        if fit.max_tokens is None or not fit.answers:
            continue
        line = (
            f"{route}: max_tokens {fmt_int(fit.max_tokens)} reserved {fmt_int(fit.reserved_unused)} "
            f"quota tokens no answer used"
        )
        if fit.suggested_max_tokens is not None:
            line += f"; max_tokens = {fmt_int(fit.suggested_max_tokens)} would have kept 99.9 % whole"
        else:
            line += f"; {fmt_int(fit.cut_off)} answers stopped at max_tokens: it is too low, not too high"
        lines.append(line + ".")
    return lines


def _tally_table(title: str, key: str, tallies: Mapping[str, Tally]) -> Table:
    from rich.table import Table

    from runner.report import TALLY_HEADERS, tally_cells

    table = Table(title=title, title_justify="left")
    table.add_column(key, overflow="fold")
    for header in TALLY_HEADERS:
        table.add_column(header, justify="right")
    for name, tally in tallies.items():
        table.add_row(name, *tally_cells(tally))
    return table
