"""A Messages response, as InvokeModel returns it and a batch job writes it, reduced to what a row keeps.

One reader for both lanes, so an on-demand row and a batch row of the same answer are the same row:
``completion`` (the text blocks joined), ``content`` (every content block as JSON text: text,
``tool_use``, ``thinking``, whatever Bedrock sent, with all their fields), ``tool_input`` (the first
``tool_use`` block's ``input`` as JSON text, so ``json_extract(tool_input, '$.label')`` works in
duckdb), ``stop_reason`` and the token usage.

Whole JSON that is not a Messages object (``{}``, a list, no ``content`` list) is
:class:`NotAMessageError`: the caller decides what that means (the pool retries it a few times
without blaming the route; the batch lane hands the row to on-demand).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from runner.types import Usage

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""Made once: compact, and non-ASCII text kept as it is (the content column is read by people)."""


class NotAMessageError(ValueError):
    """Whole JSON that is not an Anthropic Messages response; the message says what is missing."""


@dataclass(frozen=True, slots=True)
class Message:
    """What a result row keeps of one Messages response."""

    text: str
    content: str
    tool_input: str | None
    stop_reason: str | None
    usage: Usage


def read_message(data: Any) -> Message:
    """Reduce a decoded Messages response; :class:`NotAMessageError` when ``data`` is not one."""
    if not isinstance(data, dict):
        raise NotAMessageError(f"the answer is a JSON {type(data).__name__}, not a Messages object")
    content = data.get("content")
    if not isinstance(content, list):
        raise NotAMessageError("the answer has no `content` list")
    texts: list[str] = []
    tool_input: str | None = None
    for block in content:
        if not isinstance(block, dict):
            raise NotAMessageError("a content block of the answer is not an object")
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if isinstance(text, str):
                texts.append(text)
        elif kind == "tool_use" and tool_input is None and "input" in block:
            tool_input = _ENCODER.encode(block["input"])
    usage = data.get("usage")
    if usage is None:
        usage = {}
    if not isinstance(usage, dict):
        raise NotAMessageError("the answer's `usage` is not an object")
    try:
        counts = Usage.from_json(usage)
    except (TypeError, ValueError):
        raise NotAMessageError("the answer's `usage` holds a count that is not a number") from None
    stop_reason = data.get("stop_reason")
    return Message(
        text="".join(texts),
        content=_ENCODER.encode(content),
        tool_input=tool_input,
        stop_reason=stop_reason if isinstance(stop_reason, str) else None,
        usage=counts,
    )
