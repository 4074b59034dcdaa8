"""Exit codes: the DESIGN.md contract that scripts and schedulers rely on."""

from __future__ import annotations

EXIT_OK = 0
"""Every row has an ``ok`` outcome."""
EXIT_ROWS_FAILED = 1
"""The job finished, and some rows are ``error`` rows (or stayed pending under a cost cap)."""
EXIT_SPEC_INVALID = 2
"""Bad spec, unreadable input or failed preflight: stopped before the first paid call."""
EXIT_ENVIRONMENT = 3
"""Stopped after paid calls began by a failure outside the rows: the disk filled up, the output path
became unusable, the input became unreadable (or an unexpected internal error). The job directory is
consistent; fix the cause and rerun the same command to resume."""
EXIT_INTERRUPTED = 130
"""Ctrl-C or SIGTERM: state is consistent; rerun the same command to resume."""
