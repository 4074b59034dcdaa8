"""A Messages response reduced to a row: every content block kept, the tool input, and the wrong shapes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runner.answer import NotAMessageError, read_message
from runner.batch.shards import parse_output_line
from runner.bedrock import parse_completion
from runner.errors import EndpointUnavailableError, MalformedResponseError

TOOL_ANSWER: dict[str, Any] = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "content": [
        {"type": "thinking", "thinking": "Let me see.", "signature": "c2ln"},
        {"type": "text", "text": "Sure: "},
        {"type": "tool_use", "id": "toolu_1", "name": "record", "input": {"label": "négatif", "score": 2}},
        {"type": "tool_use", "id": "toolu_2", "name": "record", "input": {"label": "second"}},
    ],
    "stop_reason": "tool_use",
    "usage": {"input_tokens": 10, "output_tokens": 20},
}


class TestReadMessage:
    def test_content_is_kept_verbatim(self) -> None:
        """Every block, thinking and tool_use included, with all its fields, is in `content`."""
        message = read_message(TOOL_ANSWER)
        assert json.loads(message.content) == TOOL_ANSWER["content"]
        assert message.text == "Sure: "
        assert message.stop_reason == "tool_use"

    def test_tool_input_is_the_first_tool_use(self) -> None:
        """`tool_input` is the first tool_use block's input, as JSON text that keeps non-ASCII text."""
        message = read_message(TOOL_ANSWER)
        assert message.tool_input is not None
        assert json.loads(message.tool_input) == {"label": "négatif", "score": 2}
        assert "négatif" in message.tool_input

    def test_no_tool_use_no_tool_input(self) -> None:
        """A plain text answer has no tool input."""
        message = read_message({"content": [{"type": "text", "text": "hi"}], "usage": {}})
        assert message.tool_input is None
        assert message.text == "hi"

    @pytest.mark.parametrize(
        "data",
        [{}, [], "text", None, {"content": "hi"}, {"content": ["x"]}, {"content": [], "usage": [1]}],
    )
    def test_not_a_message(self, data: Any) -> None:
        """Whole JSON of another shape is NotAMessageError, saying what is missing."""
        with pytest.raises(NotAMessageError):
            read_message(data)


class TestParseCompletion:
    def test_a_cut_off_body_is_an_outage(self) -> None:
        """A body that is not whole JSON was cut off: retried like an outage, as before."""
        raw = json.dumps(TOOL_ANSWER).encode()
        with pytest.raises(EndpointUnavailableError):
            parse_completion(raw[: len(raw) // 2], {}, 1.0)

    @pytest.mark.parametrize("raw", [b"{}", b"[]", b'{"message": "ok"}'])
    def test_a_whole_body_of_the_wrong_shape(self, raw: bytes) -> None:
        """Whole JSON that is not a Messages response is a MalformedResponseError, not an outage."""
        with pytest.raises(MalformedResponseError, match="not a Messages response"):
            parse_completion(raw, {}, 1.0)

    def test_content_and_tool_input_reach_the_completion(self) -> None:
        """The on-demand lane's completion carries content and tool_input."""
        completion = parse_completion(json.dumps(TOOL_ANSWER).encode(), {"x-amzn-requestid": "r"}, 1.0)
        assert completion.content is not None
        assert json.loads(completion.content)[2]["name"] == "record"
        assert completion.tool_input == '{"label":"négatif","score":2}'


class TestBatchOutput:
    def test_batch_lines_keep_content_and_tool_input(self) -> None:
        """The batch lane reads the same content and tool_input from a modelOutput."""
        line = json.dumps({"recordId": "00000000003", "modelOutput": TOOL_ANSWER}).encode()
        record = parse_output_line(line)
        assert record.ok
        assert record.content is not None
        assert json.loads(record.content) == TOOL_ANSWER["content"]
        assert record.tool_input == '{"label":"négatif","score":2}'

    def test_batch_output_of_the_wrong_shape(self) -> None:
        """A modelOutput that is not a Messages response is a MalformedOutput error of the row."""
        record = parse_output_line(b'{"recordId": "00000000003", "modelOutput": {}}')
        assert record.error_code == "MalformedOutput"
