"""bedrock-batch: run large prompt datasets through Claude on Amazon Bedrock.

The library API is what the CLI uses: load a spec, run (or resume) it, read its statistics::

    from runner import load_spec, run_job, compute_stats
    report = run_job(load_spec("jobs/demo.toml"))
"""

from __future__ import annotations

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
