"""The one structlog configuration: JSON events into the job directory, readable lines on stderr.

Prompts, completions and request bodies never reach a log unless the spec says ``log_prompts``, and
credentials never do: the :class:`Redact` processor drops them before any renderer sees the event.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import IO, Any

import structlog
from structlog.typing import EventDict, WrappedLogger

TEXT_KEYS = frozenset({"prompt", "completion", "body", "messages", "system", "text", "content"})
SECRET_KEYS = frozenset(
    {
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "authorization",
        "credentials",
        "password",
    }
)


class Redact:
    """Drop secrets always, and prompt or completion text unless the user allowed it."""

    def __init__(self, *, allow_text: bool = False) -> None:
        self._drop = SECRET_KEYS if allow_text else SECRET_KEYS | TEXT_KEYS

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
        for key in self._drop.intersection(event):
            event[key] = "[redacted]"
        return event


FILE_ONLY = "_file_only"
"""An event logged with ``_file_only=True`` goes to the events file and not to stderr (the progress
figures on a terminal, where the live display already shows them)."""


class TeeJSON:
    """Append each event as one JSON line to a file (the job's ``events.jsonl``), then pass it on."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
        file_only = event.pop(FILE_ONLY, False)
        if not self._stream.closed:  # a logger bound during the run may outlive the job's file
            self._stream.write(json.dumps(event, default=str) + "\n")
            self._stream.flush()
        if file_only:
            raise structlog.DropEvent
        return event


def drop_file_only(logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
    """Without an events file, a file-only event goes nowhere."""
    if event.pop(FILE_ONLY, False):
        raise structlog.DropEvent
    return event


class _Stderr:
    """Resolve ``sys.stderr`` at each write, so a progress bar that redirects it keeps the screen tidy."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_events_stream: IO[str] | None = None
_level = "info"


def configure(
    *,
    level: str = "info",
    events_path: Path | None = None,
    log_prompts: bool = False,
    console: bool | None = None,
) -> None:
    """Configure structlog for a command. Called once per run (again for a new job directory)."""
    global _events_stream, _level
    _level = level
    if _events_stream is not None:
        _events_stream.close()
        _events_stream = None
    if console is None:
        console = sys.stderr.isatty()
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        Redact(allow_text=log_prompts),
        structlog.processors.dict_tracebacks,
    ]
    if events_path is not None:
        fd = os.open(
            events_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )  # private, like the job directory
        _events_stream = open(fd, "a", encoding="utf-8")  # noqa: SIM115 - lives until reconfigured
        processors.append(TeeJSON(_events_stream))
    else:
        processors.append(drop_file_only)
    processors.append(
        structlog.dev.ConsoleRenderer(colors=True) if console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.WriteLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def close() -> None:
    """Close the events file (end of a run) and go back to logging on stderr only."""
    global _events_stream
    if _events_stream is not None:
        _events_stream.close()
        _events_stream = None
        configure(level=_level)
