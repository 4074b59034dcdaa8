"""Every command imports only what it needs: ``--help``, ``status`` and ``stats`` never load the engine.

Each case runs the real command in a fresh interpreter and lists the heavy packages it loaded; the
time they cost is measured in ``bench/bench_startup.py`` (``python -m bench startup``), not here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner.cli import COMMANDS, cli, load_command
from runner.emulator import EmulatorThread
from runner.job import run_job
from tests.helpers import make_spec, spec_data, write_prompts

ENGINE = ("aioboto3", "aiobotocore", "botocore", "boto3", "aiohttp", "anyio", "tenacity", "structlog")
"""Packages only ``run`` (and ``models``, ``emulator``) need."""
DATA = ("pyarrow", "rich", "plotly")

PROBE = """
import json, sys
from runner.cli import main
code = main(sys.argv[1:])
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def loaded(*argv: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after ``bedrock-batch ARGV``."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=False, timeout=60
    )
    last = done.stdout.strip().splitlines()[-1]
    return set(json.loads(last))


@pytest.fixture(name="job", scope="module")
def fixture_job(emulator: EmulatorThread, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small finished job directory."""
    tmp = tmp_path_factory.mktemp("startup")
    source = write_prompts(tmp / "in.parquet", 20)
    run_job(
        make_spec(tmp, spec_data(source, tmp / "out", emulator.url)), handle_signals=False, progress=False
    )
    return tmp / "out"


class TestImports:
    @pytest.mark.parametrize(
        "argv", [["--help"], ["--version"], ["run", "--help"], ["status", "--help"], ["stats", "--help"]]
    )
    def test_help_loads_neither_engine_nor_data(self, argv: list[str]) -> None:
        """Help and version texts need click alone: no AWS client, no Arrow, no rich."""
        assert loaded(*argv) & {*ENGINE, *DATA} == set()

    def test_status_loads_no_engine(self, job: Path) -> None:
        """`status DIR` reads Parquet, and loads no AWS client, no event loop, no logging library."""
        modules = loaded("status", str(job))
        assert "pyarrow" in modules
        assert modules & {*ENGINE, "rich", "plotly"} == set()

    def test_stats_loads_no_engine(self, job: Path) -> None:
        """`stats DIR` reads Parquet and draws with rich, and loads no AWS client and no plotly."""
        modules = loaded("stats", str(job))
        assert {"pyarrow", "rich"} <= modules
        assert modules & {*ENGINE, "plotly"} == set()


class TestLazyGroup:
    def test_summaries_match_the_commands(self) -> None:
        """The one-line summaries `--help` shows without importing a command are the commands' own."""
        for name in COMMANDS:
            command = load_command(name)
            assert command.help is not None
            first = " ".join(command.help.split("\n\n")[0].split())
            assert first.startswith(COMMANDS[name].summary.rstrip(".")), name

    def test_every_command_is_listed(self) -> None:
        """The group lists exactly the commands it can load."""
        ctx = cli.make_context("bedrock-batch", ["--help"], resilient_parsing=True)
        assert cli.list_commands(ctx) == sorted(COMMANDS)
        assert cli.get_command(ctx, "nope") is None
