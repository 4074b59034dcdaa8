"""InvokeModel's wire format for Anthropic models: validate the body as Bedrock does, write the answer.

Pure functions, no I/O and no clock, so everything here is unit-testable and the server's hot path is
one call in, one call out. Validation messages copy Bedrock's two layers: its JSON-schema check
(``Malformed input request: #: required key [max_tokens] not found, ...``) and Anthropic's Messages
checks behind it (``messages: roles must alternate ...``), because runner tests match on the class and
people read the message.

Token counting is a plausible stand-in for the real tokenizer: one token per 4 characters of every
text the model reads (system, messages, tool definitions and calls), rounded up, plus fixed costs for
images (1,600) and PDF pages (1,500 a page). The answer is deterministic: a pseudo-text of the drawn
number of tokens (about 4 characters each), chosen by a hash of the prompt (system + messages) and the
seed; sampling parameters and ``max_tokens`` do not change the words, only where they stop.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import random
import re
from dataclasses import dataclass
from typing import Any

from runner.catalog import Model
from runner.emulator.cache import CachePoint
from runner.emulator.errors import BedrockError, validation

ANTHROPIC_VERSION = "bedrock-2023-05-31"
CHARS_PER_TOKEN = 4
IMAGE_TOKENS = 1_600
PDF_PAGE_TOKENS = 1_500
PDF_MAX_PAGES = 100
MAX_CACHE_BREAKPOINTS = 4
LONG_CONTEXT_WINDOW = 1_000_000

ALLOWED_KEYS = frozenset(
    {
        "anthropic_version",
        "anthropic_beta",
        "max_tokens",
        "messages",
        "system",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "tools",
        "tool_choice",
        "thinking",
        "metadata",
    }
)
"""Body keys Bedrock accepts for Anthropic; anything else is ``extraneous key [...]`` (e.g. ``model``)."""

_BLOCK_TYPES = ("text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking")
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _malformed(detail: str) -> BedrockError:
    return validation(f"Malformed input request: {detail}, please reformat your input and try again.")


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float):
        return "Number"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "JSONArray"
    if isinstance(value, dict):
        return "JSONObject"
    return "Null"


def model_name(model: Model) -> str:
    """The ``model`` field of an answer: Anthropic's short name (``claude-sonnet-4-5-20250929``)."""
    name = model.base_id.removeprefix("anthropic.")
    return name.rsplit("-v", 1)[0] if "-v" in name else name


@dataclass(frozen=True, slots=True)
class InvokeRequest:
    """A validated InvokeModel body, reduced to what the answer and the quota need."""

    max_tokens: int
    input_tokens: int
    """The whole prompt; the cache split (:class:`~runner.emulator.cache.CacheUse`) is taken from it."""
    prompt_key: int
    """64-bit hash of system + messages: picks the answer's words."""
    stop_sequences: tuple[str, ...] = ()
    cache_points: tuple[CachePoint, ...] = ()
    forced_tool: dict[str, Any] | None = None
    """The tool definition ``tool_choice`` forces, if any: the answer is then a ``tool_use`` block."""
    thinking_budget: int | None = None
    """``thinking.budget_tokens`` when extended thinking is enabled: the answer then starts with a
    ``thinking`` block."""


# --- validation and counting -------------------------------------------------------------------


class _Walk:
    """Counts characters and fixed-cost tokens in cache order; records prefix hashes when caching."""

    __slots__ = ("breakpoints", "chars", "extra", "hasher", "points")

    def __init__(self, *, hashing: bool) -> None:
        self.chars = 0
        self.extra = 0
        self.breakpoints = 0
        self.hasher = hashlib.sha256() if hashing else None
        self.points: list[CachePoint] = []

    def tokens(self) -> int:
        return (self.chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN + self.extra

    def mark(self, label: bytes) -> None:
        if self.hasher is not None:
            self.hasher.update(label)

    def add(self, chars: int, extra: int, block: Any, where: str) -> None:
        self.chars += chars
        self.extra += extra
        control = block.get("cache_control") if isinstance(block, dict) else None
        ttl: float | None = None
        if control is not None:
            ttl = _cache_control(control, f"{where}.cache_control")
            self.breakpoints += 1
            if self.breakpoints > MAX_CACHE_BREAKPOINTS:
                raise validation(
                    f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
                    f"Found {self.breakpoints}."
                )
        if self.hasher is None:
            return
        content = (
            {k: v for k, v in block.items() if k != "cache_control"} if isinstance(block, dict) else block
        )
        self.hasher.update(_DUMPS(content).encode())
        self.points.append(CachePoint(self.hasher.copy().digest(), self.tokens(), control is not None, ttl))

    def cache_points(self) -> tuple[CachePoint, ...]:
        points = self.points
        last = max((i for i, p in enumerate(points) if p.breakpoint), default=-1)
        return tuple(points[: last + 1])


def _cache_control(value: Any, where: str) -> float | None:
    if not isinstance(value, dict) or value.get("type") != "ephemeral":
        raise validation(f"{where}.type: Input should be 'ephemeral'")
    ttl = value.get("ttl")
    if ttl is None:
        return None
    if ttl == "5m":
        return 300.0
    if ttl == "1h":
        return 3600.0
    raise validation(f"{where}.ttl: Input should be '5m' or '1h'")


def _pdf_tokens(data: Any, where: str) -> int:
    if not isinstance(data, str):
        raise validation(f"{where}.data: Input should be a valid string")
    try:
        pdf = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise validation(f"{where}.data: invalid base64 data") from exc
    if not pdf.startswith(b"%PDF"):
        raise validation("The PDF specified was not valid.")
    pages = max(1, len(_PDF_PAGE.findall(pdf)))
    if pages > PDF_MAX_PAGES:
        raise validation(f"A maximum of {PDF_MAX_PAGES} PDF pages may be provided.")
    return pages * PDF_PAGE_TOKENS


def _block_cost(block: Any, where: str, *, nested: bool = False) -> tuple[int, int]:
    """(characters, fixed tokens) of one content block, validating it on the way."""
    if not isinstance(block, dict):
        raise validation(f"{where}: Input should be a valid dictionary or object")
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise validation(f"{where}.text: Field required")
        if not text:
            raise validation("messages: text content blocks must be non-empty")
        return len(text), 0
    if kind == "image":
        source = block.get("source")
        if not isinstance(source, dict):
            raise validation(f"{where}.source: Field required")
        if source.get("type") == "base64":
            if source.get("media_type") not in _IMAGE_TYPES:
                raise validation(
                    f"{where}.source.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' "
                    "or 'image/webp'"
                )
            if not isinstance(source.get("data"), str):
                raise validation(f"{where}.source.data: Field required")
        elif source.get("type") != "url":
            raise validation(f"{where}.source.type: Input should be 'base64' or 'url'")
        return 0, IMAGE_TOKENS
    if kind == "document":
        source = block.get("source")
        if not isinstance(source, dict):
            raise validation(f"{where}.source: Field required")
        stype = source.get("type")
        if stype == "base64":
            if source.get("media_type") != "application/pdf":
                raise validation(f"{where}.source.media_type: Input should be 'application/pdf'")
            return 0, _pdf_tokens(source.get("data"), f"{where}.source")
        if stype == "text":
            data = source.get("data")
            if not isinstance(data, str):
                raise validation(f"{where}.source.data: Field required")
            return len(data), 0
        if stype == "content":
            return _blocks_cost(source.get("content"), f"{where}.source.content")
        raise validation(f"{where}.source.type: Input should be 'base64', 'text' or 'content'")
    if kind == "tool_use" and not nested:
        name, tool_input = block.get("name"), block.get("input")
        if not isinstance(name, str) or not isinstance(block.get("id"), str):
            raise validation(f"{where}: tool_use blocks need `id` and `name`")
        if not isinstance(tool_input, dict):
            raise validation(f"{where}.input: Input should be a valid dictionary")
        return len(name) + len(_DUMPS(tool_input)), 0
    if kind == "tool_result" and not nested:
        if not isinstance(block.get("tool_use_id"), str):
            raise validation(f"{where}.tool_use_id: Field required")
        content = block.get("content", "")
        if isinstance(content, str):
            return len(content), 0
        return _blocks_cost(content, f"{where}.content")
    if kind == "thinking" and not nested:
        thinking = block.get("thinking")
        if not isinstance(thinking, str):
            raise validation(f"{where}.thinking: Field required")
        return len(thinking), 0
    if kind == "redacted_thinking" and not nested:
        return len(str(block.get("data", ""))), 0
    expected = ", ".join(f"'{t}'" for t in _BLOCK_TYPES)
    raise validation(
        f"{where}: Input tag '{kind}' found using 'type' does not match any of the expected tags: {expected}"
    )


def _blocks_cost(blocks: Any, where: str) -> tuple[int, int]:
    if not isinstance(blocks, list):
        raise validation(f"{where}: Input should be a valid list")
    chars = extra = 0
    for i, block in enumerate(blocks):
        c, e = _block_cost(block, f"{where}.{i}", nested=True)
        chars += c
        extra += e
    return chars, extra


def _number(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _malformed(f"#/{key}: expected type: Number, found: {_type_name(value)}")
    if not low <= value <= high:
        raise validation(f"{key}: range: {low:g}..{high:g}")
    return float(value)


def parse_invoke(raw: bytes, model: Model) -> InvokeRequest:
    """Validate an InvokeModel body for ``model``; raise :class:`BedrockError` as Bedrock would."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _malformed("expected a JSON object") from exc
    if not isinstance(body, dict):
        raise _malformed(f"#: expected type: JSONObject, found: {_type_name(body)}")
    for key in body:
        if key not in ALLOWED_KEYS:
            raise _malformed(f"#: extraneous key [{key}] is not permitted")
    for key in ("anthropic_version", "max_tokens"):
        if key not in body:
            raise _malformed(f"#: required key [{key}] not found")
    if body["anthropic_version"] != ANTHROPIC_VERSION:
        raise validation(f"anthropic_version: Input should be '{ANTHROPIC_VERSION}'")

    max_tokens = body["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise _malformed(f"#/max_tokens: expected type: Integer, found: {_type_name(max_tokens)}")
    if max_tokens < 1:
        raise validation("max_tokens: Input should be greater than or equal to 1")
    if max_tokens > model.max_output_tokens:
        raise validation(
            f"max_tokens: {max_tokens} > {model.max_output_tokens}, which is the maximum allowed number of "
            f"output tokens for {model_name(model)}"
        )

    temperature = _number(body, "temperature", 0.0, 1.0)
    top_p = _number(body, "top_p", 0.0, 1.0)
    if temperature is not None and top_p is not None and model.exclusive_sampling:
        raise validation(
            "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
        )
    top_k = body.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise validation("top_k: Input should be a non-negative integer")

    stops = body.get("stop_sequences")
    stop_sequences: tuple[str, ...] = ()
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise validation("stop_sequences: Input should be a valid list of strings")
        if any(not s.strip() for s in stops):
            raise validation("stop_sequences: each stop sequence must contain non-whitespace")
        stop_sequences = tuple(stops)

    betas = body.get("anthropic_beta", [])
    if not isinstance(betas, list) or not all(isinstance(b, str) for b in betas):
        raise _malformed("#/anthropic_beta: expected type: JSONArray of String")
    window = model.context_window
    for beta in betas:
        if beta.startswith("context-1m"):
            if beta != model.long_context_beta:
                raise validation(f"invalid beta flag: {beta} is not supported for {model_name(model)}")
            window = LONG_CONTEXT_WINDOW

    thinking = body.get("thinking")
    thinking_budget = None
    if thinking is not None:
        thinking_budget = _check_thinking(thinking, max_tokens, temperature)

    walk = _Walk(hashing=b"cache_control" in raw)
    forced_tool = _count_tools(body, walk)
    if forced_tool is not None and thinking_budget is not None:
        raise validation("Thinking may not be enabled when tool_choice forces tool use.")
    system = body.get("system")
    walk.mark(b"\x00system")
    if isinstance(system, str):
        walk.add(len(system), 0, system, "system")
    elif isinstance(system, list):
        for i, block in enumerate(system):
            if not isinstance(block, dict) or block.get("type") != "text":
                raise validation(f"system.{i}.type: Input should be 'text'")
            walk.add(*_block_cost(block, f"system.{i}"), block, f"system.{i}")
    elif system is not None:
        raise validation("system: Input should be a valid string or list of text blocks")

    messages = body.get("messages")
    if messages is None:
        raise _malformed("#: required key [messages] not found")
    _count_messages(messages, walk)

    input_tokens = max(1, walk.tokens())
    if input_tokens > window:
        raise validation(f"prompt is too long: {input_tokens} tokens > {window} maximum")
    digest = hashlib.blake2b(_DUMPS([system, messages]).encode(), digest_size=8).digest()
    return InvokeRequest(
        max_tokens=max_tokens,
        input_tokens=input_tokens,
        prompt_key=int.from_bytes(digest, "big"),
        stop_sequences=stop_sequences,
        cache_points=walk.cache_points() if walk.hasher is not None else (),
        forced_tool=forced_tool,
        thinking_budget=thinking_budget,
    )


def _check_thinking(thinking: Any, max_tokens: int, temperature: float | None) -> int | None:
    """The thinking budget when thinking is enabled, ``None`` when it is disabled."""
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled"):
        raise validation("thinking.type: Input should be 'enabled' or 'disabled'")
    if thinking["type"] == "disabled":
        return None
    budget = thinking.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1024:
        raise validation("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
    if max_tokens <= budget:
        raise validation("`max_tokens` must be greater than `thinking.budget_tokens`")
    if temperature is not None and temperature != 1.0:
        raise validation("`temperature` may only be set to 1 when thinking is enabled")
    return budget


def _count_tools(body: dict[str, Any], walk: _Walk) -> dict[str, Any] | None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools is None:
        if choice is not None:
            raise validation("tool_choice may only be specified while providing tools.")
        return None
    if not isinstance(tools, list):
        raise validation("tools: Input should be a valid list")
    walk.mark(b"\x00tools")
    by_name: dict[str, dict[str, Any]] = {}
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise validation(f"tools.{i}.name: Field required")
        by_name[tool["name"]] = tool
        definition = {k: v for k, v in tool.items() if k != "cache_control"}
        walk.add(len(_DUMPS(definition)), 0, tool, f"tools.{i}")
    if choice is None:
        return None
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise validation("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    if choice["type"] == "tool":
        if choice.get("name") not in by_name:
            raise validation(f"tool_choice.name: no tool named {choice.get('name')!r} was provided")
        return by_name[choice["name"]]
    if choice["type"] == "any" and tools:
        return tools[0]  # type: ignore[no-any-return]
    return None


def _count_messages(messages: Any, walk: _Walk) -> None:
    if not isinstance(messages, list):
        raise _malformed(f"#/messages: expected type: JSONArray, found: {_type_name(messages)}")
    if not messages:
        raise validation("messages: at least one message is required")
    last = len(messages) - 1
    previous = None
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise validation(f"{where}: Input should be a valid dictionary")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise validation(f"{where}.role: Input should be 'user' or 'assistant'")
        if i == 0 and role != "user":
            raise validation('messages: first message must use the "user" role')
        if role == previous:
            raise validation(
                f'messages: roles must alternate between "user" and "assistant", but found multiple "{role}" '
                "roles in a row"
            )
        previous = role
        if "content" not in message:
            raise validation(f"{where}.content: Field required")
        content = message["content"]
        final_assistant = i == last and role == "assistant"
        walk.mark(b"\x00" + role.encode())
        if isinstance(content, str):
            if not content and not final_assistant:
                raise validation(
                    f"{where}: all messages must have non-empty content except for the optional final "
                    "assistant message"
                )
            walk.add(len(content), 0, content, where)
        elif isinstance(content, list):
            if not content and not final_assistant:
                raise validation(
                    f"{where}: all messages must have non-empty content except for the optional final "
                    "assistant message"
                )
            for j, block in enumerate(content):
                at = f"{where}.content.{j}"
                walk.add(*_block_cost(block, at), block, at)
        else:
            raise validation(f"{where}.content: Input should be a valid string or list of content blocks")


# --- the answer ----------------------------------------------------------------------------------


_STREAM_WORDS = 66_000
"""Words in the pseudo-text stream: more than any model's ``max_output_tokens`` (64,000)."""


@functools.cache
def _stream() -> tuple[str, tuple[int, ...]]:
    """A long deterministic pseudo-text and the offset of each word (built once, ~260 kB)."""
    rng = random.Random(20250929)
    syllables = [
        "ka",
        "lo",
        "mi",
        "ne",
        "ra",
        "to",
        "su",
        "vi",
        "de",
        "po",
        "an",
        "el",
        "or",
        "us",
        "ti",
        "ba",
    ]
    vocab = sorted({"".join(rng.choice(syllables) for _ in range(rng.choice((1, 1, 2)))) for _ in range(400)})
    vocab += ["the", "and", "of", "a", "to", "in", "is", "it"]
    words = [rng.choice(vocab) for _ in range(_STREAM_WORDS)]
    for i in range(0, _STREAM_WORDS, 12):
        words[i] = words[i].capitalize()
    starts = [0]
    for word in words:
        starts.append(starts[-1] + len(word) + 1)
    return " ".join(words), tuple(starts)


def answer_text(prompt_key: int, seed: int, tokens: int) -> str:
    """``tokens`` pseudo-words (about 4 characters a token), chosen by the prompt and the seed."""
    text, starts = _stream()
    tokens = min(tokens, _STREAM_WORDS)
    offset = ((prompt_key ^ (seed * 0x9E3779B97F4A7C15)) & 0xFFFFFFFFFFFF) % (_STREAM_WORDS - tokens + 1)
    return text[starts[offset] : starts[offset + tokens] - 1]


@dataclass(frozen=True, slots=True)
class Answer:
    """A rendered InvokeModel answer and the token counts it reports."""

    body: bytes
    input_tokens: int
    output_tokens: int
    cache_read: int
    cache_write: int
    stop_reason: str


_MAX_SCHEMA_DEPTH = 8


def _schema_value(schema: Any, text: str, pick: int, depth: int = 0) -> Any:
    """A value that matches ``schema``'s types: its ``const``, one of its ``enum`` (``pick`` chooses,
    so answers vary with the prompt), or a value of its ``type``; objects and arrays recursively."""
    if not isinstance(schema, dict) or depth > _MAX_SCHEMA_DEPTH:
        return text
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[pick % len(enum)]
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]: the first type that is not null
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                return _schema_value(options[0], text, pick, depth + 1)
        kind = "object" if isinstance(schema.get("properties"), dict) else "string"
    if kind == "object":
        props = schema.get("properties")
        if not isinstance(props, dict):
            return {}
        return {name: _schema_value(spec, text, pick, depth + 1) for name, spec in props.items()}
    if kind == "array":
        items = schema.get("items")
        return [_schema_value(items, text, pick, depth + 1)] if isinstance(items, dict) else []
    if kind == "integer":
        low = schema.get("minimum")
        return int(low) if isinstance(low, int | float) and not isinstance(low, bool) else 0
    if kind == "number":
        low = schema.get("minimum")
        return float(low) if isinstance(low, int | float) and not isinstance(low, bool) else 0.5
    if kind == "boolean":
        return pick % 2 == 1
    if kind == "null":
        return None
    return text


def _tool_input(tool: dict[str, Any], text: str, pick: int = 0) -> dict[str, Any]:
    """An ``input`` that matches the tool's ``input_schema``: every property, of its type."""
    value = _schema_value(tool.get("input_schema"), text, pick)
    return value if isinstance(value, dict) else {}


def _signature(prompt_key: int, seed: int) -> str:
    """A stand-in for a thinking block's ``signature`` (opaque base64 on the real service)."""
    digest = hashlib.sha256(f"{prompt_key}|{seed}|thinking".encode()).digest()
    return base64.b64encode(digest * 2).decode("ascii")


def render_answer(
    request: InvokeRequest,
    model: Model,
    *,
    seed: int,
    output_tokens: int,
    cache_read: int = 0,
    cache_write: int = 0,
    message_id: str,
) -> Answer:
    """The Messages response body: ``output_tokens`` capped by ``max_tokens``, cut at a stop sequence.

    A forced tool answers one ``tool_use`` block instead, as long as its input's JSON (about 4
    characters a token), whatever ``output_tokens`` says.
    """
    if request.forced_tool is not None:
        return _tool_answer(request, model, seed, cache_read, cache_write, message_id)
    stop_reason = "end_turn"
    stop_sequence: str | None = None
    if output_tokens >= request.max_tokens:  # the answer filled the budget: it was cut there
        output_tokens = request.max_tokens
        stop_reason = "max_tokens"
    output_tokens = max(1, output_tokens)
    blocks: list[dict[str, Any]] = []
    answer_tokens = output_tokens
    if request.thinking_budget is not None:
        # Extended thinking: part of the output is the thinking block (within its budget), the
        # rest the answer; usage counts both, as on the real service.
        thinking_tokens = min(request.thinking_budget, output_tokens // 2)
        if thinking_tokens:
            answer_tokens = max(1, output_tokens - thinking_tokens)
            blocks.append(
                {
                    "type": "thinking",
                    "thinking": answer_text(request.prompt_key ^ 0x5A5A5A5A, seed, thinking_tokens),
                    "signature": _signature(request.prompt_key, seed),
                }
            )
    text = answer_text(request.prompt_key, seed, answer_tokens)
    if request.stop_sequences:
        cut = -1
        for seq in request.stop_sequences:
            at = text.find(seq)
            if at != -1 and (cut == -1 or at < cut):
                cut, stop_sequence = at, seq
        if cut != -1:
            text = text[:cut]
            kept = max(1, (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN)
            output_tokens = min(output_tokens, kept + output_tokens - answer_tokens)
            stop_reason = "stop_sequence"
        else:
            stop_sequence = None
    blocks.append({"type": "text", "text": text})
    return _message(
        request, model, blocks, stop_reason, stop_sequence, output_tokens, cache_read, cache_write, message_id
    )


def _tool_answer(
    request: InvokeRequest, model: Model, seed: int, cache_read: int, cache_write: int, message_id: str
) -> Answer:
    """The ``tool_use`` answer of a forced tool (``max_tokens`` too small for it: ``max_tokens``)."""
    assert request.forced_tool is not None
    words = " ".join(answer_text(request.prompt_key, seed, 3).split())
    block = {
        "type": "tool_use",
        "id": f"toolu_bdrk_{message_id[-24:]}",
        "name": request.forced_tool["name"],
        "input": _tool_input(request.forced_tool, words, request.prompt_key),
    }
    tokens = (len(_DUMPS(block)) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN
    stop_reason = "tool_use" if tokens <= request.max_tokens else "max_tokens"
    output_tokens = min(tokens, request.max_tokens)
    return _message(
        request, model, [block], stop_reason, None, output_tokens, cache_read, cache_write, message_id
    )


def _message(
    request: InvokeRequest,
    model: Model,
    content: list[dict[str, Any]],
    stop_reason: str,
    stop_sequence: str | None,
    output_tokens: int,
    cache_read: int,
    cache_write: int,
    message_id: str,
) -> Answer:
    input_tokens = request.input_tokens - cache_read - cache_write
    body = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model_name(model),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
            "output_tokens": output_tokens,
        },
    }
    return Answer(_DUMPS(body).encode(), input_tokens, output_tokens, cache_read, cache_write, stop_reason)


def error_body(message: str) -> bytes:
    """Bedrock's error body: ``{"message": ...}``."""
    return _DUMPS({"message": message}).encode()
