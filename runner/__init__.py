"""bedrock-batch: run large prompt datasets through Claude on Amazon Bedrock.

The library API is what the CLI uses: load a spec, run (or resume) it, read its statistics::

    from runner import load_spec, run_job, compute_stats
    report = run_job(load_spec("jobs/demo.toml"))
"""

from __future__ import annotations

import os
import sys

if sys.platform != "win32":  # the Windows wheels have no jemalloc
    # Arrow's default allocator (mimalloc) keeps the memory it frees; jemalloc gives it back, which
    # lowers the peak of `bedrock-batch run` at the same CPU (bench/notes.md, "Measurements behind the
    # code"). Arrow reads this once, at its first allocation, so it only takes effect when runner is
    # imported before pyarrow is used (the CLI); a value already set wins.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")

from runner.errors import (
    BatchError,
    InvocationError,
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

__version__ = "0.1.0"

__all__ = [
    "BatchError",
    "Estimate",
    "InvocationError",
    "JobDir",
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
