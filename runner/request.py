"""Row values + job spec -> InvokeModel body bytes. Pure, and on the hot path.

:class:`RequestBuilder` is made once per job: everything that does not depend on the row (the system
blocks, the sampling parameters, beta flags, ``extra``, the compiled template, the model's limits,
the spec's request digest) is worked out in its constructor, so :meth:`RequestBuilder.build` only
renders the prompt, assembles one shallow dict and serialises it. The body is built once per row,
in the source, never per attempt (see :class:`runner.types.Record`).

Errors that belong to one row raise :class:`~runner.errors.RowError` with an ``error_type`` the
result row carries (``NullPrompt``, ``MalformedMessages``, ``PromptTooLong``, ``BadOverride``,
``BadDocument``, ...). Their messages name columns and limits, never the row's text, because they end
up in logs and in ``results.parquet``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from runner import catalog
from runner.errors import RowError, SpecError
from runner.spec import JobSpec

ANTHROPIC_VERSION: Final = "bedrock-2023-05-31"
"""The ``anthropic_version`` Bedrock requires in every Anthropic Messages body."""

CHARS_PER_TOKEN: Final = 4
"""The estimate's ratio: about four characters of English per token. Cheap, and it errs low for code
and non-Latin text; it only gates ``PromptTooLong`` and sizes the quota reservation."""

PDF_TOKENS_PER_PAGE: Final = 3_000
"""Estimated input tokens per PDF page. Anthropic quotes 1,500-3,000 text tokens per page, and each
page is also shown to the model as an image; the upper figure keeps the quota reservation honest."""

PDF_BYTES_PER_PAGE: Final = 100_000
"""Fallback page size when no ``/Type /Page`` marker is visible (compressed object streams)."""

MAX_DOCUMENT_BYTES: Final = 18_000_000
"""Largest PDF a row may send. InvokeModel takes a request body of at most 25,000,000 bytes (Bedrock
API reference, ``InvokeModel`` ``body``), and base64 makes a document 4/3 as large: a bigger PDF can
never be sent, so it is an error row before any call, and the file is never read whole."""

IMAGE_TOKENS: Final = 1_600
"""Estimated tokens of an image block in a messages column (Anthropic's figure for a large image)."""

_PDF_PAGE = re.compile(rb"/Type\s*/Page(?!s)")
_OVERRIDABLE: Final = ("max_tokens", "temperature", "top_p", "top_k")

_ENCODER = json.JSONEncoder(
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,  # NaN is not JSON; Bedrock would answer 400 after we paid the round trip
    check_circular=False,  # bodies are trees built from TOML, JSON and Arrow values: no cycles
)


def dumps_body(body: Mapping[str, Any]) -> bytes:
    """The one serializer of request bodies (InvokeModel and batch JSONL lines use the same bytes).

    Same output as ``json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()``, with an
    encoder made once instead of per call (``json.dumps`` builds a new one whenever it gets options).
    """
    return _ENCODER.encode(body).encode()


@dataclass(frozen=True, slots=True)
class Built:
    """One row's request: the body bytes and the two figures admission control needs."""

    body: bytes
    max_tokens: int
    estimated_input_tokens: int


def estimate_tokens(chars: int) -> int:
    """Input tokens for ``chars`` characters of text: ``chars // 4 + 1`` (never 0)."""
    return chars // CHARS_PER_TOKEN + 1


def estimate_pdf_tokens(data: bytes) -> int:
    """Input tokens for a PDF: pages x :data:`PDF_TOKENS_PER_PAGE`.

    Pages are counted by their ``/Type /Page`` objects, one C-speed scan of the bytes; a PDF that
    hides them in compressed object streams is counted as one page per :data:`PDF_BYTES_PER_PAGE`.
    """
    pages = len(_PDF_PAGE.findall(data)) or len(data) // PDF_BYTES_PER_PAGE + 1
    return pages * PDF_TOKENS_PER_PAGE


def _compile_template(template: str, source: str) -> tuple[str, tuple[str, ...]]:
    """Rewrite ``template`` with positional fields: ``"{b} and {a} {b}"`` -> ``"{0} and {1} {0}"``,
    and list the columns it reads, in first-use order, each once.

    ``str.format(*values)`` then renders a row in C, whatever characters the column names hold. A
    placeholder names a whole column: ``{meta.title}`` is the column ``meta.title``, not an attribute,
    so column names may hold dots and row values are never introspected. Raises :class:`SpecError`
    for a template Python cannot parse, a positional ``{}`` or a nested ``{x:{w}}``.
    """
    where = f"{source}: [columns] `template`"
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise SpecError(
            f"{where} is not a valid template ({exc}); write literal braces as {{{{ }}}}"
        ) from None
    columns: list[str] = []
    out: list[str] = []
    for literal, name, spec, conversion in parsed:
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if name is None:
            continue
        if not name or name.isdigit():
            raise SpecError(f"{where} has a positional placeholder {{{name}}}; name a column, e.g. {{text}}")
        if spec and "{" in spec:
            raise SpecError(f"{where} placeholder {{{name}}} has a nested field in its format spec")
        if name not in columns:
            columns.append(name)
        field = str(columns.index(name))
        if conversion:
            field += "!" + conversion
        if spec:
            field += ":" + spec
        out.append("{" + field + "}")
    return "".join(out), tuple(columns)


def _dedupe(names: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    seen: dict[str, str] = {}
    for column, key in names:
        seen.setdefault(column, key)
    return tuple(seen.items())


class RequestBuilder:
    """Turns rows into InvokeModel bodies for one job spec.

    ``columns`` lists ``(column, spec key)`` for every column that shapes a request, so the source
    can check them against the input's schema and read only those; the same columns feed
    :meth:`key`, which is why a changed prompt runs again and a changed kept column does not.
    """

    __slots__ = (
        "_base",
        "_cache_system",
        "_context_window",
        "_default_max_tokens",
        "_document_col",
        "_exclusive",
        "_key_columns",
        "_key_hasher",
        "_max_output",
        "_messages_col",
        "_model_name",
        "_overrides",
        "_prompt_col",
        "_prompt_limit",
        "_system_blocks",
        "_system_chars",
        "_system_col",
        "_template",
        "_template_cols",
        "columns",
    )

    def __init__(self, spec: JobSpec) -> None:
        cols, req = spec.columns, spec.request
        model, _ = catalog.find_model(spec.model.id)
        self._model_name = model.name
        self._max_output = model.max_output_tokens
        self._exclusive = model.exclusive_sampling
        window = model.context_window
        if model.long_context_beta and model.long_context_beta in req.anthropic_beta:
            window = 1_000_000
        self._context_window = window
        self._prompt_limit = min(req.max_prompt_tokens, window) if req.max_prompt_tokens > 0 else window
        self._default_max_tokens = req.max_tokens

        self._prompt_col = cols.prompt
        self._messages_col = cols.messages
        self._system_col = cols.system_column
        self._document_col = cols.document
        self._template = ""
        self._template_cols: tuple[str, ...] = ()
        if cols.template:
            self._template, self._template_cols = _compile_template(cols.template, spec.source)

        # The shared system prompt: a plain string unless it must carry cache_control or be
        # followed by a per-row block, in which case it is a list of text blocks.
        self._cache_system = bool(cols.system) and cols.cache_system
        blocks: list[dict[str, Any]] = []
        if cols.system:
            block: dict[str, Any] = {"type": "text", "text": cols.system}
            if self._cache_system:
                block["cache_control"] = {"type": "ephemeral"}
            blocks.append(block)
        self._system_blocks = blocks
        self._system_chars = len(cols.system)

        base: dict[str, Any] = {"anthropic_version": ANTHROPIC_VERSION, "max_tokens": req.max_tokens}
        if cols.system and not cols.system_column:
            base["system"] = blocks if self._cache_system else cols.system
        for name in ("temperature", "top_p", "top_k"):
            value = getattr(req, name)
            if value is not None:
                base[name] = value
        if req.stop_sequences:
            base["stop_sequences"] = list(req.stop_sequences)
        if req.anthropic_beta:
            base["anthropic_beta"] = list(req.anthropic_beta)
        base.update(req.extra)
        self._base = base
        self._overrides = tuple((k, v) for k, v in cols.overrides.items() if k in _OVERRIDABLE)

        named: list[tuple[str, str]] = []
        if cols.prompt:
            named.append((cols.prompt, "prompt"))
        if cols.messages:
            named.append((cols.messages, "messages"))
        named += [(c, f"template placeholder {{{c}}}") for c in self._template_cols]
        if cols.system_column:
            named.append((cols.system_column, "system_column"))
        if cols.document:
            named.append((cols.document, "document"))
        named += [(column, f"overrides.{key}") for key, column in self._overrides]
        self.columns: tuple[tuple[str, str], ...] = _dedupe(named)
        """``(column, spec key)`` for each column a request is made from, each column once."""
        self._key_columns = tuple(c for c, _ in self.columns)
        self._key_hasher = hashlib.blake2b(spec.request_digest().encode("ascii"), digest_size=8)

    @property
    def context_window(self) -> int:
        """The model's context window for this job (1M with the model's long-context beta flag)."""
        return self._context_window

    # -- the resume key -------------------------------------------------------------------------

    def key(self, row_id: str, row: Mapping[str, Any]) -> int:
        """The row's resume key: a signed 64-bit blake2b of request digest, row id and request columns.

        Called for every input row on resume, so it hashes the values directly (strings as UTF-8,
        bytes as they are, anything else by ``repr``) behind a type tag and a length, which keeps
        ``("ab", "c")`` and ``("a", "bc")`` apart without serialising the row. A document given as
        a path is keyed by the path, not the file's content (reading every PDF on resume would cost
        more than the resume saves).
        """
        h = self._key_hasher.copy()
        data: bytes | bytearray | memoryview = row_id.encode("utf-8", "surrogatepass")
        h.update(b"i%d:" % len(data))
        h.update(data)
        for column in self._key_columns:
            value = row[column]
            if type(value) is str:
                data = value.encode("utf-8", "surrogatepass")
                h.update(b"s%d:" % len(data))
            elif isinstance(value, bytes | bytearray | memoryview):
                data = value
                h.update(b"b%d:" % len(data))
            else:
                data = repr(value).encode("utf-8", "backslashreplace")
                h.update(b"r%d:" % len(data))
            h.update(data)
        return int.from_bytes(h.digest(), "big", signed=True)

    # -- the body ---------------------------------------------------------------------------------

    def build(self, row: Mapping[str, Any]) -> Built:
        """The InvokeModel body for ``row``; raises :class:`RowError` when the row cannot be one."""
        chars = self._system_chars
        extra_tokens = 0
        if self._messages_col:
            messages, text_chars, extra_tokens = self._messages(row)
            chars += text_chars
        else:
            if self._template:
                text = self._render(row)
            elif self._prompt_col:
                text = row[self._prompt_col]
                if type(text) is not str or not text or text.isspace():
                    raise self._bad_prompt(text)
            else:
                text = ""  # a document-only job: the PDF is the whole prompt
            chars += len(text)
            content: str | list[dict[str, Any]] = text
            if self._document_col:
                document, extra_tokens = self._document(row)
                content = [document, {"type": "text", "text": text}] if text else [document]
            messages = [{"role": "user", "content": content}]

        body = self._base.copy()
        if self._system_col:
            system = self._system(row)
            if system is not None:
                body["system"] = system[0]
                chars += system[1]
        body["messages"] = messages
        max_tokens = self._default_max_tokens
        if self._overrides:
            max_tokens = self._apply_overrides(row, body)

        estimated = chars // CHARS_PER_TOKEN + 1 + extra_tokens
        if estimated > self._prompt_limit:
            raise RowError(
                f"prompt is about {estimated} tokens, over the limit of {self._prompt_limit} "
                f"({self._model_name} window {self._context_window}; see [request] max_prompt_tokens)",
                error_type="PromptTooLong",
            )
        try:
            encoded = _ENCODER.encode(body).encode()
        except (TypeError, ValueError) as exc:  # bytes or NaN in turns; a lone surrogate anywhere
            kind = "MalformedMessages" if self._messages_col else "BadPrompt"
            raise RowError(f"row has a value JSON cannot carry ({_reason(exc)})", error_type=kind) from None
        return Built(encoded, max_tokens, estimated)

    def _bad_prompt(self, value: Any) -> RowError:
        if value is None or isinstance(value, str):
            return RowError(f"prompt column {self._prompt_col!r} is null or empty", error_type="NullPrompt")
        # The source refuses non-text prompt columns at open; this guards direct callers.
        return RowError(
            f"prompt column {self._prompt_col!r} holds {type(value).__name__}, not text",
            error_type="BadPrompt",
        )

    def _render(self, row: Mapping[str, Any]) -> str:
        values = []
        for column in self._template_cols:
            try:
                value = row[column]
            except KeyError:
                raise RowError(
                    f"template placeholder {{{column}}} names a column the row lacks",
                    error_type="MissingTemplateColumn",
                ) from None
            if value is None or value == "":
                raise RowError(
                    f"template placeholder {{{column}}} is null or empty in this row", error_type="NullPrompt"
                )
            values.append(value)
        try:
            text = self._template.format(*values)
        except (ValueError, TypeError) as exc:
            raise RowError(
                f"template cannot format this row's values ({_reason(exc)})", error_type="BadTemplateValue"
            ) from None
        if text.isspace():
            raise RowError("template renders to whitespace only for this row", error_type="NullPrompt")
        return text

    def _system(self, row: Mapping[str, Any]) -> tuple[str | list[dict[str, Any]], int] | None:
        """The ``system`` value with the row's own system prompt after the shared one, and its size."""
        own = row[self._system_col]
        if own is None or own == "":
            if not self._system_blocks:
                return None
            shared = self._system_blocks if self._cache_system else self._system_blocks[0]["text"]
            return shared, 0
        if type(own) is not str:
            raise RowError(
                f"system_column {self._system_col!r} holds {type(own).__name__}, not text",
                error_type="BadSystemPrompt",
            )
        if not self._system_blocks:
            return own, len(own)
        return [*self._system_blocks, {"type": "text", "text": own}], len(own)

    def _messages(self, row: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int, int]:
        """Validated, normalised turns from the messages column, their text size and other tokens."""
        col = self._messages_col
        raw = row[col]
        if raw is None or (isinstance(raw, str | list) and not raw) or (type(raw) is str and raw.isspace()):
            raise RowError(f"messages column {col!r} is null or empty", error_type="NullPrompt")
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as exc:
                why = f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
                raise _malformed(col, why) from None
            if isinstance(raw, list) and not raw:
                raise RowError(f"messages column {col!r} is an empty list", error_type="NullPrompt")
        if not isinstance(raw, list):
            raise _malformed(col, f"must be a list of turns, not {type(raw).__name__}")
        messages: list[dict[str, Any]] = []
        chars = 0
        other = 0
        expected = "user"
        for i, turn in enumerate(raw):
            if not isinstance(turn, dict):
                raise _malformed(
                    col, f"turn {i} is {type(turn).__name__}, not an object with role and content"
                )
            role = turn.get("role")
            if role != expected:
                raise _malformed(
                    col, f"turn {i} has role {role!r}; turns alternate user/assistant, starting with user"
                )
            expected = "assistant" if role == "user" else "user"
            content = turn.get("content")
            if isinstance(content, str):
                if not content or content.isspace():
                    raise _malformed(col, f"turn {i} has empty content")
                chars += len(content)
            elif isinstance(content, list) and content:
                blocks = []
                for j, block in enumerate(content):
                    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                        raise _malformed(col, f"turn {i} block {j} is not an object with a string `type`")
                    # Arrow structs fill the fields a block lacks with null; Bedrock wants them absent.
                    block = {k: v for k, v in block.items() if v is not None}
                    if block["type"] == "text":
                        text = block.get("text")
                        if not isinstance(text, str) or not text or text.isspace():
                            raise _malformed(col, f"turn {i} block {j} is a text block without text")
                        chars += len(text)
                    elif block["type"] == "image":
                        other += IMAGE_TOKENS
                    else:
                        other += estimate_tokens(len(str(block)))
                    blocks.append(block)
                content = blocks
            else:
                raise _malformed(col, f"turn {i} content must be a non-empty string or list of blocks")
            messages.append({"role": role, "content": content})
        if self._document_col:
            document, pdf_tokens = self._document(row)
            other += pdf_tokens
            last = max(i for i, m in enumerate(messages) if m["role"] == "user")
            content = messages[last]["content"]
            if isinstance(content, str):
                content = [{"type": "text", "text": content}]
            messages[last] = {"role": "user", "content": [document, *content]}
        return messages, chars, other

    def _document(self, row: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
        """The PDF of the row as a base64 document block, and its estimated tokens.

        A text value is a file path; a relative one is read from the working directory, like
        ``[job] input``. The file is read here, in the source's thread, not by the workers.
        """
        col = self._document_col
        value = row[col]
        if isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
            origin = "bytes"
        elif isinstance(value, str) and value:
            data = _read_document(Path(value).expanduser(), col)
            origin = "file"
        else:
            what = "null" if value is None else type(value).__name__
            raise RowError(
                f"document column {col!r} is {what}; give PDF bytes or a file path", error_type="BadDocument"
            )
        if len(data) > MAX_DOCUMENT_BYTES:
            raise RowError(
                f"document column {col!r}: the {origin} is {len(data):,} bytes, over the "
                f"{MAX_DOCUMENT_BYTES:,} an InvokeModel body can carry",
                error_type="BadDocument",
            )
        if not data.startswith(b"%PDF"):
            raise RowError(f"document column {col!r}: the {origin} is not a PDF", error_type="BadDocument")
        block = {
            "type": "document",
            "source": {
                "type": "base64",
                "media_type": "application/pdf",
                "data": base64.b64encode(data).decode("ascii"),
            },
        }
        return block, estimate_pdf_tokens(data)

    def _apply_overrides(self, row: Mapping[str, Any], body: dict[str, Any]) -> int:
        """Set per-row parameters from their columns (null: keep the spec's); returns max_tokens."""
        for key, column in self._overrides:
            value = row[column]
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _bad_override(key, column, f"holds {type(value).__name__}, not a number")
            if key in ("max_tokens", "top_k"):
                if isinstance(value, float):
                    if not value.is_integer():
                        raise _bad_override(key, column, "is not a whole number")
                    value = int(value)
                low, high = (1, self._max_output) if key == "max_tokens" else (1, 1_000_000)
                if not low <= value <= high:
                    raise _bad_override(key, column, f"is {value}, outside {low}..{high}")
            elif not 0.0 <= value <= 1.0:  # temperature, top_p; also rejects NaN
                raise _bad_override(key, column, f"is {value}, outside 0..1")
            body[key] = value
        if self._exclusive and "temperature" in body and "top_p" in body:
            raise RowError(
                f"{self._model_name} accepts temperature or top_p, not both; this row's overrides set both",
                error_type="BadOverride",
            )
        max_tokens: int = body["max_tokens"]
        return max_tokens


def _read_document(path: Path, column: str) -> bytes:
    """The bytes of a document given as a path: a regular file of at most :data:`MAX_DOCUMENT_BYTES`.

    Anything else is a ``BadDocument`` row error, never a hang or a memory blow-up: the type is checked
    before the file is opened (a FIFO would block the open, ``/dev/zero`` never ends), again on the open
    descriptor (opened non-blocking, in case the path changed in between), and no more than the limit
    plus one byte is ever read.
    """

    def bad(why: str) -> RowError:
        return RowError(f"document column {column!r}: {why}", error_type="BadDocument")

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise bad("the path is not a regular file (a directory, device or pipe)")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise bad(f"cannot read the file ({exc.strerror or type(exc).__name__})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise bad("the path is not a regular file (a directory, device or pipe)")
        if info.st_size > MAX_DOCUMENT_BYTES:
            raise bad(
                f"the file is {info.st_size:,} bytes, over the {MAX_DOCUMENT_BYTES:,} an InvokeModel "
                "body can carry"
            )
        with open(fd, "rb", closefd=False) as handle:
            return handle.read(MAX_DOCUMENT_BYTES + 1)  # a file that grew is caught by the caller
    except OSError as exc:
        raise bad(f"cannot read the file ({exc.strerror or type(exc).__name__})") from None
    finally:
        os.close(fd)


def _malformed(column: str, why: str) -> RowError:
    return RowError(f"messages column {column!r}: {why}", error_type="MalformedMessages")


def _bad_override(key: str, column: str, why: str) -> RowError:
    return RowError(f"override {key} from column {column!r} {why}", error_type="BadOverride")


def _reason(exc: Exception) -> str:
    """An exception's message cut short: format and JSON errors name types, never the value."""
    return str(exc)[:200]
