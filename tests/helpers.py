"""Helpers for the job integration tests: small Parquet inputs, spec files, results and emulator counters.

The tests drive the real engine (``run_job`` or the ``bedrock-batch`` console script in a subprocess)
against the session emulator over loopback HTTP; nothing of ours is mocked. These helpers only build
inputs and read outputs, so a test reads as "given this input and these faults, the job did that".
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from runner.spec import JobSpec, load_spec

HAIKU = "anthropic.claude-haiku-4-5-20251001-v1:0"
GLOBAL_HAIKU = f"global.{HAIKU}"
US_HAIKU = f"us.{HAIKU}"
EU_HAIKU = f"eu.{HAIKU}"

BEDROCK_BATCH = str(Path(sys.executable).parent / "bedrock-batch")
"""The console script of the venv running the tests (``python -m runner.cli`` is not runnable)."""

FAST_RETRY: dict[str, Any] = {
    "max_attempts": 12,
    "backoff_initial_s": 0.01,
    "backoff_max_s": 0.2,
    "timeout_s": 30.0,
}
"""Retries that keep a storm or an outage to a fraction of a second of backoff."""

RESULT_COLUMNS = (
    "id",
    "status",
    "completion",
    "stop_reason",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "model_id",
    "region",
    "attempts",
    "latency_ms",
    "error_type",
    "error_message",
    "request_id",
)
"""The columns DESIGN.md promises in every results.parquet."""


# --- inputs ----------------------------------------------------------------------------------------


def ids_for(n: int, *, start: int = 0) -> list[str]:
    return [f"row-{i:05d}" for i in range(start, start + n)]


def prompts_for(ids: Sequence[str]) -> list[str]:
    """A distinct prompt per id, so every row has its own body hash in the emulator's counters."""
    return [f"Write one short line about item {row_id}." for row_id in ids]


def write_table(path: Path, columns: Mapping[str, Sequence[Any] | pa.Array]) -> Path:
    """Write ``columns`` as one Parquet file (small row groups, so reads come in several batches)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(dict(columns)), path, row_group_size=64)
    return path


def write_prompts(path: Path, n: int, *, start: int = 0, **extra: Sequence[Any]) -> Path:
    """An input of ``n`` rows with ``id`` and ``prompt`` (plus any ``extra`` columns)."""
    ids = ids_for(n, start=start)
    return write_table(path, {"id": ids, "prompt": prompts_for(ids), **extra})


# --- specs -----------------------------------------------------------------------------------------


def spec_data(
    input_path: Path, job_dir: Path, endpoint_url: str, /, **sections: Mapping[str, Any]
) -> dict[str, Any]:
    """A small, fast job spec as plain data; each keyword merges into (and overrides) its section.

    The defaults: Haiku 4.5 from us-east-1 (routes ``global`` then ``us``), no preflight, ``id`` and
    ``prompt`` columns, 32 output tokens, 8 in flight, quick retries, and small parts.
    """
    data: dict[str, Any] = {
        "job": {"input": str(input_path), "output": str(job_dir)},
        "model": {"id": HAIKU, "region": "us-east-1", "endpoint_url": endpoint_url, "preflight": False},
        "columns": {"id": "id", "prompt": "prompt"},
        "request": {"max_tokens": 32},
        "limits": {"max_in_flight": 8},
        "retry": dict(FAST_RETRY),
        "output": {"part_rows": 50, "part_seconds": 0.5},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(copy.deepcopy(dict(values)))
    return data


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def to_toml(data: Mapping[str, Mapping[str, Any]]) -> str:
    """Render a two-level spec (sections of scalars, lists and inline tables) as TOML."""
    lines: list[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def write_spec(path: Path, data: Mapping[str, Mapping[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_toml(data), encoding="utf-8")
    return path


def make_spec(tmp_path: Path, data: Mapping[str, Mapping[str, Any]], name: str = "job.toml") -> JobSpec:
    """Write ``data`` to a TOML file and load it the way the CLI does."""
    return load_spec(write_spec(tmp_path / name, data))


# --- results ---------------------------------------------------------------------------------------


def read_results(job_dir: Path) -> pa.Table:
    return pq.read_table(job_dir / "results.parquet")


def rows_by_id(job_dir: Path) -> dict[str, dict[str, Any]]:
    """``results.parquet`` as ``{id: row}`` (fails the test if an id appears twice)."""
    rows = read_results(job_dir).to_pylist()
    by_id = {row["id"]: row for row in rows}
    assert len(by_id) == len(rows), "results.parquet has a duplicate id"
    return by_id


# --- emulator counters -----------------------------------------------------------------------------


def duplicate_bills(counters: Mapping[str, Any]) -> int:
    """Billed calls beyond the first for the same body: the requests paid for twice."""
    return sum(n - 1 for n in counters["bodies"].values())


def outcomes_of(counters: Mapping[str, Any], profile: str) -> dict[str, int]:
    """Outcome counts of one inference profile, summed over the regions it was called from."""
    total: dict[str, int] = {}
    for route, outcomes in counters["requests"].items():
        if route.rsplit("@", 1)[0] == profile:
            for outcome, n in outcomes.items():
                total[outcome] = total.get(outcome, 0) + n
    return total


def invoke_calls(counters: Mapping[str, Any]) -> int:
    """InvokeModel calls the emulator answered, whatever the outcome."""
    return sum(sum(outcomes.values()) for outcomes in counters["requests"].values())


# --- the command line in a subprocess --------------------------------------------------------------


def start_cli(args: Sequence[str], *, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start ``bedrock-batch ARGS`` with its output going to ``log`` (a pipe could fill and block it)."""
    with open(log, "ab") as sink:
        return subprocess.Popen(
            [BEDROCK_BATCH, *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )


def run_cli(args: Sequence[str], *, cwd: Path, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``bedrock-batch ARGS`` to the end; output captured as text."""
    return subprocess.run(
        [BEDROCK_BATCH, *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
        check=False,
    )


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.01) -> None:
    """Poll ``predicate`` until it holds; fail the test naming ``what`` if it never does."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[bytes], sig: signal.Signals, *, timeout: float = 30.0) -> int:
    """Send ``sig`` and wait for the exit code (killing it if it outlives ``timeout``)."""
    proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the runner did not exit within {timeout:g} s of {sig.name}") from None


# --- damaged inputs --------------------------------------------------------------------------------


def text_with_invalid_utf8(values: Sequence[str], bad: Sequence[int]) -> pa.Array:
    """A string array whose values at ``bad`` are bytes that are not UTF-8 (Parquet stores them as
    they are; pyarrow fails only when they are turned into Python strings)."""
    raw = [b"\xff\xfe not text" if i in bad else v.encode() for i, v in enumerate(values)]
    return pa.array(raw, pa.binary()).view(pa.string())


def corrupt_row_group(path: Path, group: int, column: str) -> None:
    """Overwrite the data pages of one column chunk of one row group with garbage (a bad disk block):
    the file's metadata still reads, decoding that row group's column fails."""
    meta = pq.ParquetFile(path).metadata
    chunk = meta.row_group(group).column(meta.schema.to_arrow_schema().get_field_index(column))
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data = bytearray(path.read_bytes())
    for i in range(start + 20, start + chunk.total_compressed_size - 5):
        data[i] = 0x5A
    path.write_bytes(bytes(data))
