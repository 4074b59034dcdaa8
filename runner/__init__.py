"""bedrock-batch: run large prompt datasets through Claude on Amazon Bedrock.

The library API is what the CLI uses: load a spec, run (or resume) it, read its statistics::

    from runner import load_spec, run_job, compute_stats
    report = run_job(load_spec("jobs/demo.toml"))
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if sys.platform != "win32":  # the Windows wheels have no jemalloc
    # Arrow's default allocator (mimalloc) keeps the memory it frees; jemalloc gives it back, which
    # lowers the peak of `bedrock-batch run` at the same CPU (bench/notes.md, "Measurements behind the
    # code"). Arrow reads this once, at its first allocation, so it only takes effect when runner is
    # imported before pyarrow is used (the CLI); a value already set wins.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")

__version__ = "0.1.0"

# What each public name is imported from, on first use (PEP 562): ``import runner`` alone costs
# nothing, so ``bedrock-batch --help``, ``status`` and the emulator never load aioboto3 or pyarrow.
_LAZY: dict[str, str] = {
    "BatchError": "runner.errors",
    "Estimate": "runner.estimate",
    "InvocationError": "runner.errors",
    "JobEnvironmentError": "runner.errors",
    "JobDir": "runner.state",
    "JobReport": "runner.job",
    "JobSpec": "runner.spec",
    "LockedError": "runner.errors",
    "PermanentError": "runner.errors",
    "PreflightError": "runner.errors",
    "PriceTable": "runner.pricing",
    "RetryableError": "runner.errors",
    "RowError": "runner.errors",
    "SinkError": "runner.errors",
    "SourceError": "runner.errors",
    "SpecError": "runner.errors",
    "StateError": "runner.errors",
    "compute_stats": "runner.stats",
    "estimate_job": "runner.estimate",
    "load_spec": "runner.spec",
    "run_job": "runner.job",
    "run_job_async": "runner.job",
    "spec_from_dict": "runner.spec",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'runner' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


if TYPE_CHECKING:
    from runner.errors import (
        BatchError,
        InvocationError,
        JobEnvironmentError,
        LockedError,
        PermanentError,
        PreflightError,
        RetryableError,
        RowError,
        SinkError,
        SourceError,
        SpecError,
        StateError,
    )
    from runner.estimate import Estimate, estimate_job
    from runner.job import JobReport, run_job, run_job_async
    from runner.pricing import PriceTable
    from runner.spec import JobSpec, load_spec, spec_from_dict
    from runner.state import JobDir
    from runner.stats import compute_stats


__all__ = [
    "BatchError",
    "Estimate",
    "InvocationError",
    "JobDir",
    "JobEnvironmentError",
    "JobReport",
    "JobSpec",
    "LockedError",
    "PermanentError",
    "PreflightError",
    "PriceTable",
    "RetryableError",
    "RowError",
    "SinkError",
    "SourceError",
    "SpecError",
    "StateError",
    "compute_stats",
    "estimate_job",
    "load_spec",
    "run_job",
    "run_job_async",
    "spec_from_dict",
]
