"""The values that flow through a job: a ``Record`` in, a ``Result`` out, and the ``Route`` between.

Frozen and slotted: millions of them pass through a run, and none is changed after it is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

Status: TypeAlias = Literal["ok", "error"]

EMULATED_LANE_PREFIX = "emulated_"
"""Prefix of the ``lane`` of a dry run's rows (``run --emulate``): ``emulated_on_demand``,
``emulated_batch``. Priced as the lane after it, never mistaken for a paid row."""

RowId: TypeAlias = str | int
"""A row's id as the input holds it: text, or an integer when the id column holds integers (the
``id`` result column keeps that type, so a join back to the input needs no cast)."""

TOKEN_FIELDS: tuple[str, ...] = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
"""The four kinds of token, by Bedrock's names: the fields of :class:`Usage`, the result columns, the
per-token prices of :class:`runner.pricing.Rates` and the sums of ``stats``."""


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes: an inference profile called from a region.

    ``geography`` is the profile's prefix (``global``, ``us``, ``eu``, ...), which decides price and
    data residency; ``name`` (``global@us-east-1``) is how logs, stats and breakers refer to it.
    """

    model_id: str
    region: str
    geography: str

    @property
    def name(self) -> str:
        return f"{self.geography}@{self.region}"


@dataclass(frozen=True, slots=True)
class Record:
    """One input row, ready to send: its body is built once, in the source, never per attempt.

    ``key`` is the resume key (row id + request hash): a row whose key is already done is never sent
    again, and a row whose prompt or parameters changed gets a new key and runs again. ``error`` is
    set instead of ``body`` when the row cannot become a request; it still becomes a result row.
    """

    index: int
    id: RowId
    key: int
    body: bytes | None
    max_tokens: int
    estimated_input_tokens: int
    error_type: str | None = None
    error_message: str | None = None
    keep: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as Bedrock reports them in the response's ``usage`` object."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @classmethod
    def from_json(cls, usage: Mapping[str, Any]) -> Usage:
        """A Messages response's ``usage`` object; a missing or null count is 0."""
        return cls(
            input_tokens=int(usage.get("input_tokens") or 0),
            output_tokens=int(usage.get("output_tokens") or 0),
            cache_creation_input_tokens=int(usage.get("cache_creation_input_tokens") or 0),
            cache_read_input_tokens=int(usage.get("cache_read_input_tokens") or 0),
        )

    @property
    def total(self) -> int:
        """Every token processed, cached or not (the basis of tokens per minute)."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_input_tokens
            + self.cache_read_input_tokens
        )


@dataclass(frozen=True, slots=True)
class Completion:
    """A successful InvokeModel answer, reduced to what the result row keeps."""

    text: str
    stop_reason: str | None
    usage: Usage
    request_id: str | None
    latency_ms: float | None
    """Wall time of the call; ``None`` for an answer of a batch job (no call of its own)."""
    server_latency_ms: float | None = None
    """Bedrock's ``x-amzn-bedrock-invocation-latency``: how long the request spent at the service, so
    ``now - server_latency`` bounds when the service booked it against the quota."""
    content: str | None = None
    """The answer's ``content`` blocks as JSON text, every block and field as Bedrock sent them
    (text, ``tool_use``, ``thinking``, ...): ``text`` keeps only the text blocks."""
    tool_input: str | None = None
    """The ``input`` of the first ``tool_use`` block as JSON text; ``None`` when there is none."""


@dataclass(frozen=True, slots=True)
class Result:
    """One output row: the outcome of one record, ok or error. Column names are the DESIGN contract
    (``runner.schemas.RESULT_COLUMNS`` maps the fields to them). Made by :meth:`answered` and
    :meth:`failed`."""

    index: int
    id: RowId
    key: int
    status: Status
    completion: str | None = None
    content: str | None = None
    tool_input: str | None = None
    stop_reason: str | None = None
    usage: Usage = Usage()
    model_id: str | None = None
    region: str | None = None
    attempts: int = 0
    latency_ms: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    request_id: str | None = None
    retryable: bool = False
    cost_usd: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    lane: str = "on_demand"
    keep: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def answered(
        cls,
        record: Record,
        completion: Completion,
        *,
        route: Route,
        attempts: int,
        cost_usd: float,
        started_at: float,
        finished_at: float,
        lane: str = "on_demand",
    ) -> Result:
        """The ``ok`` row of ``record``: ``route`` answered it with ``completion``."""
        return cls(
            index=record.index, id=record.id, key=record.key, status="ok", completion=completion.text,
            content=completion.content, tool_input=completion.tool_input,
            stop_reason=completion.stop_reason, usage=completion.usage, model_id=route.model_id,
            region=route.region, attempts=attempts, latency_ms=completion.latency_ms,
            request_id=completion.request_id, cost_usd=cost_usd, started_at=started_at,
            finished_at=finished_at, lane=lane, keep=record.keep,
        )  # fmt: skip

    @classmethod
    def failed(
        cls,
        record: Record,
        *,
        error_type: str | None,
        error_message: str | None,
        started_at: float,
        finished_at: float,
        route: Route | None = None,
        attempts: int = 0,
        request_id: str | None = None,
        retryable: bool = False,
    ) -> Result:
        """The ``error`` row of ``record``; ``route`` is the last one tried, if any was."""
        return cls(
            index=record.index, id=record.id, key=record.key, status="error",
            model_id=route.model_id if route else None, region=route.region if route else None,
            attempts=attempts, error_type=error_type, error_message=error_message, request_id=request_id,
            retryable=retryable, started_at=started_at, finished_at=finished_at, keep=record.keep,
        )  # fmt: skip
