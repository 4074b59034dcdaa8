"""What a user installs: ``make run`` sets up the runtime and the ``report`` extra only, the development
tools come with ``make test`` and ``make lint``, and both are pinned by ``constraints.txt``.

The Makefile is asked what it would do (``make -n``) for a virtual environment that does not exist
yet, so the answer is the fresh-clone one; nothing is installed.
"""

from __future__ import annotations

import ast
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEV_ONLY = ("pytest", "hypothesis", "mypy", "ruff", "moto", "boto3_stubs", "types_aiobotocore")


def planned_installs(target: str, venv: Path) -> list[list[str]]:
    """The ``pip install`` command lines ``make TARGET`` would run for a new ``venv``."""
    plan = subprocess.run(
        ["make", "-n", target, f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [shlex.split(line) for line in plan.splitlines() if "pip install" in line and "-e" in line]


class TestInstall:
    def test_make_run_installs_the_runtime_and_the_report_extra(self, tmp_path: Path) -> None:
        """`make run` on a fresh clone installs `.[report]`, pinned by constraints.txt, and no dev tools."""
        installs = planned_installs("run", tmp_path / "venv")
        assert installs == [[str(tmp_path / "venv" / "bin" / "pip"), "install", "--quiet", "-c",
                             "constraints.txt", "-e", ".[report]"]]  # fmt: skip

    @pytest.mark.parametrize("target", ["test", "lint"])
    def test_dev_targets_add_the_dev_tools(self, tmp_path: Path, target: str) -> None:
        """`make test` and `make lint` install the same runtime, then the dev extra, under the same lock."""
        installs = planned_installs(target, tmp_path / "venv")
        assert [line[-1] for line in installs] == [".[report]", ".[report,dev]"]
        assert all(line[line.index("-c") + 1] == "constraints.txt" for line in installs)

    def test_the_runtime_imports_no_dev_tool(self) -> None:
        """No module of the package imports a development tool, so the lean install runs everything."""
        offenders = []
        for path in sorted((ROOT / "runner").rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in DEV_ONLY]
        assert offenders == []
