"""Request building: row values + spec -> InvokeModel body bytes, row errors and the resume key."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.errors import RowError, SpecError
from runner.request import (
    ANTHROPIC_VERSION,
    MAX_DOCUMENT_BYTES,
    PDF_TOKENS_PER_PAGE,
    Built,
    RequestBuilder,
    dumps_body,
    estimate_pdf_tokens,
)
from runner.spec import JobSpec, spec_from_dict

HAIKU45 = "anthropic.claude-haiku-4-5-20251001-v1:0"
SONNET45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU3 = "anthropic.claude-3-haiku-20240307-v1:0"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Page >> endobj\n2 0 obj << /Type /Page >> endobj\n%%EOF\n"
SECRET = "the-secret-prompt-text"


def make_spec(
    columns: dict[str, Any] | None = None,
    request: dict[str, Any] | None = None,
    model: str = HAIKU45,
) -> JobSpec:
    raw: dict[str, Any] = {
        "job": {"input": "in.parquet", "output": "out"},
        "model": {"id": model},
        "columns": columns if columns is not None else {"prompt": "text"},
    }
    if request:
        raw["request"] = request
    return spec_from_dict(raw, source="jobs/test.toml")


def body_of(built: Built) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(built.body)
    return decoded


def build(row: dict[str, Any], columns: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return body_of(RequestBuilder(make_spec(columns, **kw)).build(row))


def row_error(row: dict[str, Any], columns: dict[str, Any] | None = None, **kw: Any) -> RowError:
    with pytest.raises(RowError) as info:
        RequestBuilder(make_spec(columns, **kw)).build(row)
    return info.value


DEMO_COLUMNS = {
    "id": "id",
    "template": "Summarise in one sentence for a {audience} reader:\n\n{text}",
    "system": "You are a concise technical writer.",
    "cache_system": True,
    "keep": ["team"],
}


class TestBody:
    def test_demo_template_body_is_exact(self) -> None:
        """The demo spec gives the documented Bedrock body, with the cached system block."""
        built = RequestBuilder(make_spec(DEMO_COLUMNS, {"max_tokens": 256, "temperature": 0.2})).build(
            {"text": "Rivers flow.", "audience": "general", "team": "ads"}
        )
        assert body_of(built) == {
            "anthropic_version": ANTHROPIC_VERSION,
            "max_tokens": 256,
            "system": [
                {
                    "type": "text",
                    "text": "You are a concise technical writer.",
                    "cache_control": {"type": "ephemeral"},
                }
            ],
            "temperature": 0.2,
            "messages": [
                {"role": "user", "content": "Summarise in one sentence for a general reader:\n\nRivers flow."}
            ],
        }
        assert built.max_tokens == 256

    def test_body_bytes_are_compact_json(self) -> None:
        """The body is exactly json.dumps with compact separators and unescaped non-ASCII, UTF-8 encoded."""
        built = RequestBuilder(make_spec()).build({"text": "Grüße, 世界"})
        expected = json.dumps(body_of(built), separators=(",", ":"), ensure_ascii=False).encode()
        assert built.body == expected
        assert "世界".encode() in built.body

    def test_dumps_body_matches_json_dumps(self) -> None:
        """The shared serializer writes what json.dumps would with the documented options."""
        body = {"a": [1, 2.5, None, True], "b": {"ü": "\n"}}
        assert dumps_body(body) == json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    def test_prompt_column_becomes_one_user_message(self) -> None:
        """A prompt column's text is the whole content of a single user turn."""
        assert build({"text": "Hello"})["messages"] == [{"role": "user", "content": "Hello"}]

    def test_optional_parameters_absent_by_default(self) -> None:
        """Without settings the body has no system, sampling, stop sequences or beta keys."""
        assert set(build({"text": "Hi"})) == {"anthropic_version", "max_tokens", "messages"}

    def test_optional_parameters_present_when_set(self) -> None:
        """top_k, stop_sequences and anthropic_beta are sent when the spec sets them."""
        body = build(
            {"text": "Hi"},
            request={"top_k": 5, "stop_sequences": ["END"], "anthropic_beta": ["context-1m-2025-08-07"]},
            model=SONNET45,
        )
        assert body["top_k"] == 5
        assert body["stop_sequences"] == ["END"]
        assert body["anthropic_beta"] == ["context-1m-2025-08-07"]

    def test_extra_keys_are_merged(self) -> None:
        """`extra` keys (tools, thinking) pass through into the body as they are."""
        tools = [{"name": "f", "description": "d", "input_schema": {"type": "object"}}]
        body = build({"text": "Hi"}, request={"extra": {"tools": tools}})
        assert body["tools"] == tools

    def test_shared_system_without_cache_is_a_string(self) -> None:
        """A shared system prompt without cache_system is sent as a plain string."""
        body = build({"text": "Hi"}, {"prompt": "text", "system": "Be brief."})
        assert body["system"] == "Be brief."

    def test_system_column_block_follows_cached_shared_block(self) -> None:
        """A per-row system prompt comes as its own block after the cached shared one."""
        columns = {"prompt": "text", "system": "Shared.", "cache_system": True, "system_column": "sys"}
        body = build({"text": "Hi", "sys": "Own."}, columns)
        assert body["system"] == [
            {"type": "text", "text": "Shared.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Own."},
        ]

    def test_system_column_alone_is_a_string(self) -> None:
        """With no shared system prompt, the row's own system prompt is sent as a string."""
        body = build({"text": "Hi", "sys": "Own."}, {"prompt": "text", "system_column": "sys"})
        assert body["system"] == "Own."

    def test_null_system_column_keeps_shared_system(self) -> None:
        """A row with a null system_column value gets only the shared system prompt."""
        columns = {"prompt": "text", "system": "Shared.", "system_column": "sys"}
        assert build({"text": "Hi", "sys": None}, columns)["system"] == "Shared."

    def test_null_system_column_alone_sends_no_system(self) -> None:
        """A null system_column value without a shared prompt leaves `system` out."""
        body = build({"text": "Hi", "sys": None}, {"prompt": "text", "system_column": "sys"})
        assert "system" not in body

    def test_cache_system_without_system_is_ignored(self) -> None:
        """cache_system with no shared system prompt adds nothing to the body."""
        assert "system" not in build({"text": "Hi"}, {"prompt": "text", "cache_system": True})


class TestTemplate:
    def test_literal_braces(self) -> None:
        """Doubled braces in the template are literal braces in the prompt."""
        body = build({"x": "v"}, {"template": "{{json}} {x} }}"})
        assert body["messages"][0]["content"] == "{json} v }"

    def test_placeholder_may_name_a_column_with_dots(self) -> None:
        """`{meta.title}` is the column called meta.title, not attribute access."""
        body = build({"meta.title": "T"}, {"template": "Title: {meta.title}"})
        assert body["messages"][0]["content"] == "Title: T"

    def test_repeated_placeholder_and_format_spec(self) -> None:
        """A column may appear twice, and format specs and conversions apply to its value."""
        body = build({"n": 3, "s": "x"}, {"template": "{n:03d} {s!r} {n}"})
        assert body["messages"][0]["content"] == "003 'x' 3"

    @pytest.mark.parametrize(
        ("template", "message"),
        [
            ("{unclosed", "not a valid template"),
            ("a } b", "not a valid template"),
            ("{} and {}", "positional placeholder"),
            ("{0}", "positional placeholder"),
            ("{x:{w}}", "nested field"),
        ],
    )
    def test_bad_template_is_a_spec_error(self, template: str, message: str) -> None:
        """A template Python cannot render by column name is refused when the builder is made."""
        with pytest.raises(SpecError, match=message) as info:
            RequestBuilder(make_spec({"template": template}))
        assert "jobs/test.toml" in str(info.value)


class TestMessages:
    def test_json_messages_pass_through(self) -> None:
        """Turns from JSON text are sent as they are, assistant prefill included."""
        turns = [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": [{"type": "text", "text": "More"}]},
            {"role": "assistant", "content": "Sure:"},
        ]
        body = build({"m": json.dumps(turns)}, {"messages": "m"})
        assert body["messages"] == turns

    def test_list_of_structs_drops_null_fields(self) -> None:
        """Turns from an Arrow list-of-struct column lose the null fields Arrow fills in."""
        turns = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look", "source": None},
                    {"type": "image", "text": None, "source": {"type": "base64", "data": "AA=="}},
                ],
            }
        ]
        body = build({"m": turns}, {"messages": "m"})
        assert body["messages"][0]["content"] == [
            {"type": "text", "text": "Look"},
            {"type": "image", "source": {"type": "base64", "data": "AA=="}},
        ]

    def test_extra_turn_fields_are_dropped(self) -> None:
        """Only role and content of each turn reach the body."""
        body = build({"m": [{"role": "user", "content": "Hi", "name": None}]}, {"messages": "m"})
        assert body["messages"] == [{"role": "user", "content": "Hi"}]

    def test_input_turns_are_not_mutated(self) -> None:
        """Building from a list-of-struct value leaves the row's value untouched."""
        turns = [{"role": "user", "content": [{"type": "text", "text": "Hi", "x": None}]}]
        build({"m": turns, "pdf": PDF}, {"messages": "m", "document": "pdf"})
        assert turns == [{"role": "user", "content": [{"type": "text", "text": "Hi", "x": None}]}]


class TestDocument:
    def test_pdf_bytes_block_comes_before_text(self) -> None:
        """A PDF bytes value becomes a base64 document block ahead of the prompt text."""
        body = build({"text": "Summarise", "pdf": PDF}, {"prompt": "text", "document": "pdf"})
        content = body["messages"][0]["content"]
        assert content[0]["type"] == "document"
        assert content[0]["source"]["media_type"] == "application/pdf"
        assert content[0]["source"]["type"] == "base64"
        assert content[1] == {"type": "text", "text": "Summarise"}

    def test_pdf_path_is_read(self, tmp_path: Path) -> None:
        """A path value is read from disk and sent like bytes."""
        path = tmp_path / "doc.pdf"
        path.write_bytes(PDF)
        from_path = build({"text": "S", "pdf": str(path)}, {"prompt": "text", "document": "pdf"})
        from_bytes = build({"text": "S", "pdf": PDF}, {"prompt": "text", "document": "pdf"})
        assert from_path == from_bytes

    def test_document_only_job(self) -> None:
        """With only a document column, the PDF is the whole user turn."""
        body = build({"pdf": PDF}, {"document": "pdf"})
        assert [b["type"] for b in body["messages"][0]["content"]] == ["document"]

    def test_document_goes_into_last_user_turn(self) -> None:
        """With messages, the document leads the last user turn's content."""
        turns = [
            {"role": "user", "content": "First"},
            {"role": "assistant", "content": "Ok"},
            {"role": "user", "content": "Second"},
            {"role": "assistant", "content": "Prefill"},
        ]
        body = build({"m": json.dumps(turns), "pdf": PDF}, {"messages": "m", "document": "pdf"})
        assert body["messages"][0]["content"] == "First"
        assert [b["type"] for b in body["messages"][2]["content"]] == ["document", "text"]
        assert body["messages"][3]["content"] == "Prefill"

    def test_pdf_adds_its_page_estimate(self) -> None:
        """A PDF adds pages x PDF_TOKENS_PER_PAGE to the estimate."""
        builder = RequestBuilder(make_spec({"document": "pdf"}))
        assert builder.build({"pdf": PDF}).estimated_input_tokens == 2 * PDF_TOKENS_PER_PAGE + 1

    def test_pdf_without_page_markers_counts_by_size(self) -> None:
        """A PDF whose pages are hidden in object streams counts one page per 100 kB."""
        assert estimate_pdf_tokens(b"%PDF-1.7" + b"x" * 250_000) == 3 * PDF_TOKENS_PER_PAGE


OVERRIDE_COLUMNS: dict[str, Any] = {
    "prompt": "text",
    "overrides": {"max_tokens": "mt", "temperature": "t", "top_k": "k"},
}
KEY_COLUMNS: dict[str, Any] = {"prompt": "text", "keep": ["team"]}


class TestOverrides:
    def test_override_sets_body_and_max_tokens(self) -> None:
        """Override columns replace the spec's parameters for that row."""
        built = RequestBuilder(make_spec(OVERRIDE_COLUMNS)).build({"text": "Hi", "mt": 77, "t": 0.5, "k": 3})
        assert built.max_tokens == 77
        assert (body_of(built)["max_tokens"], body_of(built)["temperature"], body_of(built)["top_k"]) == (
            77,
            0.5,
            3,
        )

    def test_null_override_keeps_spec_value(self) -> None:
        """A null override value leaves the spec's parameter in place."""
        builder = RequestBuilder(make_spec(OVERRIDE_COLUMNS, {"max_tokens": 99}))
        built = builder.build({"text": "Hi", "mt": None, "t": None, "k": None})
        assert built.max_tokens == 99
        assert "temperature" not in body_of(built)

    def test_whole_float_max_tokens_is_accepted(self) -> None:
        """A float column holding a whole number is a valid max_tokens."""
        built = RequestBuilder(make_spec(OVERRIDE_COLUMNS)).build(
            {"text": "Hi", "mt": 10.0, "t": None, "k": None}
        )
        assert built.max_tokens == 10
        assert body_of(built)["max_tokens"] == 10

    @pytest.mark.parametrize(
        "row",
        [
            {"mt": 0},
            {"mt": -5},
            {"mt": 64_001},
            {"mt": "100"},
            {"mt": True},
            {"mt": 10.5},
            {"t": 1.5},
            {"t": -0.1},
            {"t": float("nan")},
            {"k": 0},
        ],
    )
    def test_bad_override_values(self, row: dict[str, Any]) -> None:
        """Override values of the wrong type or range become BadOverride errors."""
        full = {"text": SECRET, "mt": None, "t": None, "k": None, **row}
        error = row_error(full, OVERRIDE_COLUMNS)
        assert error.error_type == "BadOverride"
        assert SECRET not in str(error)

    def test_override_max_tokens_bounded_by_model(self) -> None:
        """max_tokens above the model's output limit is refused for a small model."""
        columns = {"prompt": "text", "overrides": {"max_tokens": "mt"}}
        assert row_error({"text": "Hi", "mt": 5000}, columns, model=HAIKU3).error_type == "BadOverride"

    def test_exclusive_sampling_overrides(self) -> None:
        """Haiku 4.5 refuses a row whose overrides set temperature on top of the spec's top_p."""
        columns = {"prompt": "text", "overrides": {"temperature": "t"}}
        error = row_error({"text": "Hi", "t": 0.3}, columns, request={"top_p": 0.9})
        assert error.error_type == "BadOverride"


class TestRowErrors:
    @pytest.mark.parametrize("value", [None, "", "   \n"])
    def test_null_prompt(self, value: str | None) -> None:
        """A null, empty or blank prompt is a NullPrompt error."""
        assert row_error({"text": value}).error_type == "NullPrompt"

    def test_non_text_prompt(self) -> None:
        """A prompt value that is not text is a BadPrompt error."""
        assert row_error({"text": 42}).error_type == "BadPrompt"

    @pytest.mark.parametrize("value", [None, ""])
    def test_null_template_column(self, value: str | None) -> None:
        """A null or empty template placeholder value is a NullPrompt error naming the column."""
        error = row_error({"a": "x", "b": value}, {"template": "{a} {b}"})
        assert error.error_type == "NullPrompt"
        assert "{b}" in str(error)

    def test_blank_rendered_template(self) -> None:
        """A template that renders to whitespace only is a NullPrompt error."""
        assert row_error({"a": "  "}, {"template": "{a}"}).error_type == "NullPrompt"

    def test_missing_template_column(self) -> None:
        """A row without a placeholder's column is a MissingTemplateColumn error."""
        assert row_error({"a": "x"}, {"template": "{a} {b}"}).error_type == "MissingTemplateColumn"

    def test_template_value_format_error(self) -> None:
        """A value its placeholder's format spec cannot format is a BadTemplateValue error."""
        assert row_error({"n": SECRET}, {"template": "{n:d}"}).error_type == "BadTemplateValue"

    @pytest.mark.parametrize("value", [None, "", "  ", "[]", []])
    def test_null_messages(self, value: Any) -> None:
        """A null or empty messages value is a NullPrompt error."""
        assert row_error({"m": value}, {"messages": "m"}).error_type == "NullPrompt"

    @pytest.mark.parametrize(
        "value",
        [
            '[{"role": "user", "content": "' + SECRET + '"',
            '{"role": "user", "content": "' + SECRET + '"}',
            json.dumps([{"role": "assistant", "content": SECRET}]),
            json.dumps([{"role": "user", "content": SECRET}, {"role": "user", "content": "x"}]),
            json.dumps([{"role": "system", "content": SECRET}]),
            json.dumps([{"role": "user", "content": ""}]),
            json.dumps([{"role": "user", "content": []}]),
            json.dumps([{"role": "user", "content": 5}]),
            json.dumps([{"role": "user", "content": [{"text": SECRET}]}]),
            json.dumps([{"role": "user", "content": [{"type": "text"}]}]),
            json.dumps([{"role": "user", "content": [{"type": "text", "text": " "}]}]),
            json.dumps(["user", SECRET]),
            '[{"role": "user", "content": [{"type": "text", "text": "' + SECRET + '", "w": NaN}]}]',
        ],
    )
    def test_malformed_messages(self, value: str) -> None:
        """Unparsable, mis-shaped or non-alternating turns are MalformedMessages errors without the text."""
        error = row_error({"m": value}, {"messages": "m"})
        assert error.error_type == "MalformedMessages"
        assert SECRET not in str(error)

    def test_unserializable_struct_value(self) -> None:
        """A bytes value inside a struct turn's block is a MalformedMessages error."""
        turns = [{"role": "user", "content": [{"type": "image", "source": {"data": b"\x00"}}]}]
        assert row_error({"m": turns}, {"messages": "m"}).error_type == "MalformedMessages"

    def test_lone_surrogate_in_json_turns(self) -> None:
        """A JSON escape for half a surrogate pair cannot be sent as UTF-8: MalformedMessages."""
        value = '[{"role": "user", "content": "a\\ud800b"}]'
        assert row_error({"m": value}, {"messages": "m"}).error_type == "MalformedMessages"

    def test_lone_surrogate_in_prompt(self) -> None:
        """A prompt string holding a lone surrogate is a BadPrompt error, not invalid UTF-8 bytes."""
        assert row_error({"text": "a\ud800b"}).error_type == "BadPrompt"

    def test_prompt_over_max_prompt_tokens(self) -> None:
        """A prompt estimated over `max_prompt_tokens` is a PromptTooLong error."""
        error = row_error({"text": SECRET * 100}, request={"max_prompt_tokens": 100})
        assert error.error_type == "PromptTooLong"
        assert SECRET not in str(error)

    def test_prompt_over_context_window(self) -> None:
        """A prompt estimated over the model's 200k window is a PromptTooLong error."""
        assert row_error({"text": "x" * 1_000_000}).error_type == "PromptTooLong"

    def test_long_context_beta_widens_the_window(self) -> None:
        """With the model's long-context beta flag a 250k-token prompt fits."""
        builder = RequestBuilder(
            make_spec(request={"anthropic_beta": ["context-1m-2025-08-07"]}, model=SONNET45)
        )
        assert builder.context_window == 1_000_000
        assert builder.build({"text": "x" * 1_000_000}).estimated_input_tokens == 250_001

    def test_long_context_beta_refused_for_other_models(self) -> None:
        """Haiku 4.5 has no 1M window: its beta flag is a spec error before any call, not a 400 per row."""
        with pytest.raises(SpecError, match="does not have"):
            make_spec(request={"anthropic_beta": ["context-1m-2025-08-07"]})

    @pytest.mark.parametrize("value", [None, 5, "", b"GIF89a", "/no/such/file.pdf"])
    def test_bad_document(self, value: Any) -> None:
        """A document that is null, not bytes or path, unreadable or not a PDF is a BadDocument error."""
        error = row_error({"text": SECRET, "pdf": value}, {"prompt": "text", "document": "pdf"})
        assert error.error_type == "BadDocument"
        assert SECRET not in str(error)

    @pytest.mark.timeout(20)
    @pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
    def test_document_path_that_is_not_a_regular_file(self, tmp_path: Path, kind: str) -> None:
        """A FIFO (which hung the run), a device (/dev/zero exhausted memory) or a directory is a
        BadDocument error at once, nothing read."""
        if kind == "fifo":
            path = tmp_path / "pipe.pdf"
            os.mkfifo(path)
        elif kind == "device":
            path = Path("/dev/zero")
        else:
            path = tmp_path / "dir.pdf"
            path.mkdir()
        error = row_error({"text": "Hi", "pdf": str(path)}, {"prompt": "text", "document": "pdf"})
        assert error.error_type == "BadDocument"
        assert "not a regular file" in str(error)

    def test_document_file_over_the_body_limit(self, tmp_path: Path) -> None:
        """A PDF larger than an InvokeModel body can carry is a BadDocument error, the file never read."""
        path = tmp_path / "huge.pdf"
        with open(path, "wb") as handle:
            handle.write(PDF)
            handle.truncate(MAX_DOCUMENT_BYTES + 1)  # sparse: no disk used
        error = row_error({"text": "Hi", "pdf": str(path)}, {"prompt": "text", "document": "pdf"})
        assert error.error_type == "BadDocument"
        assert f"over the {MAX_DOCUMENT_BYTES:,}" in str(error)

    def test_the_spec_documents_the_document_limit(self) -> None:
        """The help of [columns] `document` (and so docs/spec.md) quotes the limit the code applies."""
        import dataclasses

        from runner.spec import ColumnsSection

        (document,) = [f for f in dataclasses.fields(ColumnsSection) if f.name == "document"]
        assert f"{MAX_DOCUMENT_BYTES:,}" in document.metadata["help"]

    def test_document_bytes_over_the_body_limit(self) -> None:
        """PDF bytes in the column larger than the body limit are a BadDocument error too."""
        data = PDF + b"\0" * MAX_DOCUMENT_BYTES
        error = row_error({"text": "Hi", "pdf": data}, {"prompt": "text", "document": "pdf"})
        assert (error.error_type, "over the" in str(error)) == ("BadDocument", True)

    def test_path_to_non_pdf(self, tmp_path: Path) -> None:
        """A readable file that does not start with %PDF is a BadDocument error."""
        path = tmp_path / "notes.txt"
        path.write_text("hello")
        error = row_error({"text": "Hi", "pdf": str(path)}, {"prompt": "text", "document": "pdf"})
        assert error.error_type == "BadDocument"

    def test_bad_system_column(self) -> None:
        """A per-row system prompt that is not text is a BadSystemPrompt error."""
        error = row_error({"text": "Hi", "s": 3}, {"prompt": "text", "system_column": "s"})
        assert error.error_type == "BadSystemPrompt"


class TestEstimate:
    def test_counts_system_and_prompt(self) -> None:
        """The estimate is (system chars + prompt chars) // 4 + 1."""
        builder = RequestBuilder(make_spec({"prompt": "text", "system": "s" * 40}))
        assert builder.build({"text": "p" * 60}).estimated_input_tokens == 26

    def test_counts_message_text_and_images(self) -> None:
        """Text of every turn counts by characters; an image block adds a flat figure."""
        turns = [
            {"role": "user", "content": "a" * 8},
            {"role": "assistant", "content": "b" * 8},
            {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "AA=="}}]},
        ]
        built = RequestBuilder(make_spec({"messages": "m"})).build({"m": turns})
        assert built.estimated_input_tokens == 16 // 4 + 1 + 1_600


class TestKey:
    def key(self, row: dict[str, Any], row_id: str = "r1", **kw: Any) -> int:
        return RequestBuilder(make_spec(kw.pop("columns", KEY_COLUMNS), **kw)).key(row_id, row)

    def test_signed_64_bit(self) -> None:
        """The key fits a signed 64-bit integer (the int64 request_key column)."""
        assert -(2**63) <= self.key({"text": "Hi", "team": "a"}) < 2**63

    def test_kept_columns_do_not_count(self) -> None:
        """Changing a kept column alone keeps the key: the request is the same."""
        assert self.key({"text": "Hi", "team": "a"}) == self.key({"text": "Hi", "team": "b"})

    def test_row_id_counts(self) -> None:
        """Two rows with the same prompt but different ids have different keys."""
        assert self.key({"text": "Hi", "team": "a"}, "r1") != self.key({"text": "Hi", "team": "a"}, "r2")

    def test_values_are_delimited(self) -> None:
        """Moving characters between two columns changes the key."""
        columns = {"template": "{a}{b}"}
        assert self.key({"a": "ab", "b": "c"}, columns=columns) != self.key(
            {"a": "a", "b": "bc"}, columns=columns
        )

    def test_value_types_are_distinguished(self) -> None:
        """The text "1" and the integer 1 give different keys."""
        columns = {"template": "{a}"}
        assert self.key({"a": "1"}, columns=columns) != self.key({"a": 1}, columns=columns)

    def test_spec_changes_change_the_key(self) -> None:
        """Model, parameters and template all change the key of the same row."""
        row = {"text": "Hi", "team": "a"}
        keys = {
            self.key(row),
            self.key(row, model=SONNET45),
            self.key(row, request={"temperature": 0.5}),
            self.key(row, request={"max_tokens": 10}),
            self.key(row, columns={"template": "Q: {text}"}),
        }
        assert len(keys) == 5

    def test_document_bytes_count(self) -> None:
        """A different PDF in the document column changes the key."""
        columns = {"prompt": "text", "document": "pdf"}
        assert self.key({"text": "Hi", "pdf": PDF}, columns=columns) != self.key(
            {"text": "Hi", "pdf": PDF + b" "}, columns=columns
        )

    @given(prompt=st.text(), row_id=st.text(), team=st.text())
    def test_stable_for_equal_rows(self, prompt: str, row_id: str, team: str) -> None:
        """The same row under the same spec always gets the same key, from a fresh builder too."""
        row = {"text": prompt, "team": team}
        assert self.key(row, row_id) == self.key(dict(row), row_id)

    @given(a=st.text(), b=st.text())
    def test_different_prompts_differ(self, a: str, b: str) -> None:
        """Different prompt text gives a different key."""
        if a != b:
            assert self.key({"text": a, "team": ""}) != self.key({"text": b, "team": ""})


printable = st.text(st.characters(codec="utf-8"), min_size=1).filter(lambda s: not s.isspace())


class TestProperties:
    @given(prompt=printable)
    def test_any_prompt_round_trips(self, prompt: str) -> None:
        """Any non-blank prompt yields valid JSON whose single user turn holds exactly that text."""
        built = RequestBuilder(make_spec()).build({"text": prompt})
        body = body_of(built)
        assert body["anthropic_version"] == ANTHROPIC_VERSION
        assert body["messages"] == [{"role": "user", "content": prompt}]
        assert built.estimated_input_tokens == len(prompt) // 4 + 1

    @given(a=printable, b=printable)
    def test_any_template_values_round_trip(self, a: str, b: str) -> None:
        """Template values holding braces or quotes are inserted verbatim, never re-interpreted."""
        body = build({"a": a, "b": b}, {"template": "<{a}|{b}>"})
        assert body["messages"][0]["content"] == f"<{a}|{b}>"

    @given(
        turns=st.lists(printable, min_size=1, max_size=6).map(
            lambda texts: [
                {"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)
            ]
        )
    )
    def test_alternating_turns_round_trip(self, turns: list[dict[str, str]]) -> None:
        """Any alternating user-first conversation passes through unchanged."""
        assert build({"m": json.dumps(turns)}, {"messages": "m"})["messages"] == turns
