"""The emulator's pure parts: quota arithmetic, fault configuration, wire validation, prompt cache."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.catalog import find_model
from runner.emulator import ConfigError, EmulatorConfig, Latency, OutputTokens, ScriptedOutcome
from runner.emulator.cache import PromptCache
from runner.emulator.control import get_inference_profile, list_foundation_models, list_inference_profiles
from runner.emulator.errors import ERRORS, BedrockError
from runner.emulator.quota import TokenWindow, reservation_tokens, settled_tokens
from runner.emulator.routes import outage_error, route_error
from runner.emulator.server import region_of
from runner.emulator.wire import InvokeRequest, answer_text, parse_invoke, render_answer

SONNET_45 = find_model("anthropic.claude-sonnet-4-5-20250929-v1:0")[0]
SONNET_4 = find_model("anthropic.claude-sonnet-4-20250514-v1:0")[0]
HAIKU_45 = find_model("anthropic.claude-haiku-4-5-20251001-v1:0")[0]


def body(**overrides: Any) -> bytes:
    data: dict[str, Any] = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Hello there"}],
    }
    data.update(overrides)
    return json.dumps({k: v for k, v in data.items() if v is not None}).encode()


def pdf(pages: int) -> str:
    raw = (
        b"%PDF-1.4\n" + b"".join(b"<< /Type /Page >>\n" for _ in range(pages)) + b"<< /Type /Pages >>\n%%EOF"
    )
    return base64.b64encode(raw).decode()


class TestQuota:
    def test_reservation_counts_max_tokens_and_cache_writes(self) -> None:
        """Admission reserves input + cache_write + max_tokens."""
        assert reservation_tokens(100, 50, 4096) == 4246

    def test_settlement_burns_output_and_ignores_cache_reads(self) -> None:
        """The settled cost is input + cache_write + output x burndown, rounded up."""
        assert settled_tokens(100, 50, 21, 5.0) == 100 + 50 + 105
        assert settled_tokens(100, 0, 3, 1.5) == 105

    def test_admits_until_the_window_is_full(self) -> None:
        """A reservation that would take the window over the limit is refused."""
        window = TokenWindow(1000)
        assert window.try_reserve(600, now=0.0) is not None
        assert window.try_reserve(400, now=1.0) is not None
        assert window.try_reserve(1, now=2.0) is None
        assert window.used(2.0) == 1000

    def test_entries_leave_after_sixty_seconds(self) -> None:
        """The window rolls: tokens admitted 60 s ago no longer count."""
        window = TokenWindow(1000)
        window.try_reserve(1000, now=0.0)
        assert window.try_reserve(10, now=59.9) is None
        assert window.try_reserve(10, now=60.0) is not None
        assert window.used(60.0) == 10

    def test_settlement_frees_the_unused_reservation(self) -> None:
        """Settling to the real usage gives back what max_tokens over-reserved."""
        window = TokenWindow(1000)
        entry = window.try_reserve(900, now=0.0)
        assert entry is not None
        window.settle(entry, 100, now=1.0)
        assert window.used(1.0) == 100
        assert window.try_reserve(900, now=1.0) is not None

    def test_settlement_after_expiry_is_ignored(self) -> None:
        """An entry that already left the window does not come back when it settles."""
        window = TokenWindow(1000)
        entry = window.try_reserve(500, now=0.0)
        assert entry is not None
        window.settle(entry, 900, now=61.0)
        assert window.used(61.0) == 0

    def test_a_reservation_above_the_limit_never_passes(self) -> None:
        """Only a smaller max_tokens gets a request larger than the whole quota through."""
        window = TokenWindow(100)
        assert window.try_reserve(101, now=0.0) is None
        assert window.seconds_until(101, now=0.0) is None

    def test_seconds_until_room(self) -> None:
        """The wait is until enough of the oldest entries age out."""
        window = TokenWindow(100)
        window.try_reserve(60, now=0.0)
        window.try_reserve(40, now=10.0)
        assert window.seconds_until(30, now=20.0) == pytest.approx(40.0)
        assert window.seconds_until(0, now=20.0) == 0.0

    @given(st.lists(st.tuples(st.integers(1, 500), st.floats(0, 5)), max_size=60), st.integers(1, 2000))
    def test_window_never_exceeds_the_limit(self, steps: list[tuple[int, float]], limit: int) -> None:
        """Whatever arrives and whenever, admitted reservations never sum above the limit."""
        window = TokenWindow(limit)
        now = 0.0
        for tokens, dt in steps:
            now += dt
            window.try_reserve(tokens, now)
            assert 0 <= window.used(now) <= limit


class TestConfig:
    def test_round_trip(self) -> None:
        """to_dict() is the from_dict() structure: GET /faults can be PUT back."""
        config = EmulatorConfig.from_dict(
            {
                "seed": 7,
                "defaults": {
                    "latency": {"dist": "lognormal", "median_ms": 800, "sigma": 0.4},
                    "output_tokens": {"min": 5, "max": 9},
                    "tpm": 1000,
                },
                "routes": [
                    {"profile": "global.*", "access_denied": True},
                    {"profile": "us.*", "region": "us-east-1", "outages": [{"start_s": 1, "end_s": 2}]},
                ],
            }
        )
        assert EmulatorConfig.from_dict(config.to_dict()) == config
        assert json.loads(json.dumps(config.to_dict())) == config.to_dict()

    def test_rules_apply_in_order(self) -> None:
        """Defaults first, then every matching rule, later rules winning."""
        config = EmulatorConfig.from_dict(
            {
                "defaults": {"throttle_rate": 0.1, "latency_ms": 5},
                "routes": [
                    {"profile": "us.*", "throttle_rate": 0.5},
                    {"profile": "us.*", "region": "us-west-2", "throttle_rate": 0.9},
                ],
            }
        )
        assert config.settings_for("us.x", "us-east-1").throttle_rate == 0.5
        assert config.settings_for("us.x", "us-west-2").throttle_rate == 0.9
        assert config.settings_for("eu.x", "eu-west-1").throttle_rate == 0.1
        assert config.settings_for("eu.x", "eu-west-1").latency == Latency("fixed", ms=5.0)

    def test_patch_merges_defaults_and_routes(self) -> None:
        """PATCH changes only the keys it names and the rule with the same profile and region."""
        config = EmulatorConfig.from_dict(
            {"defaults": {"tpm": 100, "error_rate": 0.2}, "routes": [{"profile": "a", "throttle_rate": 0.3}]}
        )
        patched = config.merged(
            {"defaults": {"tpm": 0}, "routes": [{"profile": "a", "slow_rate": 0.1}, {"profile": "b"}]}
        )
        assert patched.defaults.tpm is None
        assert patched.defaults.error_rate == 0.2
        assert len(patched.routes) == 2
        assert patched.settings_for("a", "r").throttle_rate == 0.3
        assert patched.settings_for("a", "r").slow_rate == 0.1

    def test_toml_file(self, tmp_path: Path) -> None:
        """The documented fault file parses."""
        path = tmp_path / "faults.toml"
        path.write_text(
            "seed = 3\n[defaults]\nlatency_ms = 20\nper_output_token_ms = 1\n"
            '[[routes]]\nprofile = "global.*"\naccess_denied = true\n'
            '[[routes]]\nprofile = "us.*"\nregion = "us-east-1"\ntpm = 5000\n'
            'outages = [{start_s = 10, end_s = 40, since = "start"}]\n'
        )
        config = EmulatorConfig.from_toml(path)
        assert config.seed == 3
        assert config.settings_for("global.m", "us-east-1").access_denied
        settings = config.settings_for("us.m", "us-east-1")
        assert settings.tpm == 5000
        assert settings.outages[0].since == "start"

    @pytest.mark.parametrize(
        ("data", "fragment"),
        [
            ({"defaults": {"throttle": 0.1}}, "defaults: unknown fault setting 'throttle'"),
            ({"defaults": {"throttle_rate": 2}}, "defaults.throttle_rate: must be between 0 and 1"),
            ({"defaults": {"tpm": "many"}}, "defaults.tpm: must be an integer"),
            ({"defaults": {"latency_ms": 1, "latency": 2}}, "latency_ms or latency, not both"),
            ({"defaults": {"latency": {"dist": "gamma"}}}, "defaults.latency.dist"),
            ({"defaults": {"latency": {"dist": "lognormal"}}}, "defaults.latency.median_ms: required"),
            ({"routes": [{"profile": "x", "outages": [{"start_s": 5, "end_s": 1}]}]}, "routes[0].outages[0]"),
            ({"routes": [{"profile": "x", "error_type": "Nope"}]}, "routes[0].error_type"),
            ({"routes": [{"profile": ""}]}, "routes[0].profile"),
            (
                {"defaults": {"output_tokens": {"min": 9, "max": 2}}},
                "defaults.output_tokens: max must be >= min",
            ),
            ({"sead": 1}, "unknown key 'sead'"),
        ],
    )
    def test_errors_name_the_key(self, data: dict[str, Any], fragment: str) -> None:
        """A bad setting is refused with the path of the key in the message."""
        with pytest.raises(ConfigError, match=None) as info:
            EmulatorConfig.from_dict(data)
        assert fragment in str(info.value)

    def test_toml_errors_name_the_file(self, tmp_path: Path) -> None:
        """A broken file is reported with its path."""
        path = tmp_path / "bad.toml"
        path.write_text("[defaults]\nslow_rate = -1\n")
        with pytest.raises(ConfigError, match=r"bad\.toml: defaults\.slow_rate"):
            EmulatorConfig.from_toml(path)

    def test_latency_distributions(self) -> None:
        """Fixed is exact, uniform stays in range, lognormal is centred on the median and capped."""
        assert Latency("fixed", ms=12).sample(0.3, 0.7) == 12
        assert 10 <= Latency("uniform", min_ms=10, max_ms=20).sample(0.5, 0.1) <= 20
        lognormal = Latency("lognormal", median_ms=800, sigma=0.4)
        assert lognormal.sample(math.exp(-0.5), 0.25) == pytest.approx(800)  # z = 0
        assert Latency("lognormal", median_ms=800, sigma=2, max_ms=900).sample(1e-9, 1.0) == 900

    def test_output_tokens_pick_covers_the_range(self) -> None:
        """Draws map onto [min, max] inclusive."""
        spec = OutputTokens(5, 9)
        assert {spec.pick(u / 100) for u in range(100)} == {5, 6, 7, 8, 9}
        assert spec.pick(0.999999) == 9

    @pytest.mark.parametrize(
        ("item", "expected"),
        [
            ("ok", ScriptedOutcome("ok")),
            ("ThrottlingException", ScriptedOutcome("error", error="ThrottlingException")),
            (
                {"error": "ValidationException", "message": "m"},
                ScriptedOutcome("error", "ValidationException", "m"),
            ),
            ({"latency_ms": 50}, ScriptedOutcome("ok", latency_ms=50.0)),
            ({"output_tokens": 7}, ScriptedOutcome("ok", output_tokens=7)),
            ({"cut_off": True}, ScriptedOutcome("cut_off")),
            ("slow", ScriptedOutcome("slow")),
            ({"slow_ms": 10}, ScriptedOutcome("slow", slow_ms=10.0)),
            ("not_messages", ScriptedOutcome("body", body={})),
            ({"body": {"content": "x"}}, ScriptedOutcome("body", body={"content": "x"})),
        ],
    )
    def test_script_outcomes(self, item: Any, expected: ScriptedOutcome) -> None:
        """Every documented outcome form parses."""
        assert ScriptedOutcome.parse(item) == expected

    @pytest.mark.parametrize("item", ["Throttled", 3, {"error": "Nope"}, {"colour": 1}])
    def test_bad_script_outcomes(self, item: Any) -> None:
        """An outcome the emulator cannot play is refused before anything is queued."""
        with pytest.raises(ConfigError):
            ScriptedOutcome.parse(item)


def invalid(raw: bytes, model: Any = SONNET_45) -> str:
    with pytest.raises(BedrockError) as info:
        parse_invoke(raw, model)
    assert info.value.name == "ValidationException"
    return info.value.message


class TestWireValidation:
    @pytest.mark.parametrize(
        ("raw", "fragment"),
        [
            (b"not json", "Malformed input request"),
            (b"[1, 2]", "expected type: JSONObject, found: JSONArray"),
            (body(anthropic_version=None), "required key [anthropic_version] not found"),
            (body(max_tokens=None), "required key [max_tokens] not found"),
            (body(messages=None), "required key [messages] not found"),
            (body(model="claude"), "extraneous key [model] is not permitted"),
            (body(anthropic_version="2023-06-01"), "anthropic_version"),
            (body(max_tokens="10"), "#/max_tokens: expected type: Integer, found: String"),
            (body(max_tokens=0), "max_tokens: Input should be greater than or equal to 1"),
            (body(max_tokens=64_001), "maximum allowed number of output tokens"),
            (body(messages=[]), "at least one message"),
            (
                body(messages=[{"role": "assistant", "content": "x"}]),
                'first message must use the "user" role',
            ),
            (
                body(messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]),
                "roles must alternate",
            ),
            (
                body(messages=[{"role": "system", "content": "a"}]),
                "role: Input should be 'user' or 'assistant'",
            ),
            (body(messages=[{"role": "user", "content": ""}]), "non-empty content"),
            (body(messages=[{"role": "user", "content": []}]), "non-empty content"),
            (
                body(messages=[{"role": "user", "content": [{"type": "text", "text": ""}]}]),
                "must be non-empty",
            ),
            (body(messages=[{"role": "user", "content": [{"type": "video"}]}]), "Input tag 'video'"),
            (body(temperature=0.5, top_p=0.9), "cannot both be specified"),
            (body(temperature=1.5), "temperature: range: 0..1"),
            (body(stop_sequences=["  "]), "non-whitespace"),
            (body(thinking={"type": "enabled", "budget_tokens": 2000}), "must be greater than"),
            (body(tool_choice={"type": "auto"}), "tool_choice may only be specified"),
            (body(anthropic_beta="context-1m-2025-08-07"), "anthropic_beta"),
        ],
    )
    def test_rejections(self, raw: bytes, fragment: str) -> None:
        """Each malformed body is a ValidationException with Bedrock's wording."""
        assert fragment in invalid(raw)

    def test_temperature_with_top_p_is_fine_on_older_models(self) -> None:
        """Only models with exclusive sampling refuse both."""
        assert parse_invoke(body(temperature=0.5, top_p=0.9), SONNET_4).max_tokens == 100
        assert "cannot both" in invalid(body(temperature=0.5, top_p=0.9), HAIKU_45)

    def test_final_assistant_message_may_be_empty(self) -> None:
        """A prefill turn at the end may be empty, as the Messages API allows."""
        messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]
        assert parse_invoke(body(messages=messages), SONNET_45).input_tokens >= 1

    def test_input_tokens_are_about_four_characters_each(self) -> None:
        """Token counts follow the prompt's length: system and message text, 4 characters a token."""
        request = parse_invoke(
            body(system="s" * 400, messages=[{"role": "user", "content": "u" * 801}]), SONNET_45
        )
        assert request.input_tokens == math.ceil(1201 / 4)

    def test_long_prompt_needs_the_context_beta(self) -> None:
        """Over 200k tokens is refused unless the model's 1M-context beta is requested."""
        long = [{"role": "user", "content": "x" * 840_000}]
        assert "prompt is too long: 210000 tokens > 200000 maximum" in invalid(body(messages=long))
        request = parse_invoke(body(messages=long, anthropic_beta=["context-1m-2025-08-07"]), SONNET_45)
        assert request.input_tokens == 210_000
        assert "invalid beta flag" in invalid(
            body(messages=long, anthropic_beta=["context-1m-2025-08-07"]), HAIKU_45
        )

    def test_pdf_pages_are_counted(self) -> None:
        """A PDF document costs a plausible 1,500 tokens a page."""
        doc = {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": pdf(3)},
        }
        content = [doc, {"type": "text", "text": "Summarise"}]
        request = parse_invoke(body(messages=[{"role": "user", "content": content}]), SONNET_45)
        assert request.input_tokens == 3 * 1_500 + math.ceil(len("Summarise") / 4)

    @pytest.mark.parametrize(
        ("data", "fragment"),
        [
            ("!!!notbase64", "invalid base64"),
            (base64.b64encode(b"hello").decode(), "PDF specified was not valid"),
        ],
    )
    def test_bad_pdf(self, data: str, fragment: str) -> None:
        """Undecodable or non-PDF data is a ValidationException."""
        doc = {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": data},
        }
        assert fragment in invalid(body(messages=[{"role": "user", "content": [doc]}]))

    def test_too_many_cache_breakpoints(self) -> None:
        """Five cache_control blocks are one too many."""
        block = {"type": "text", "text": "abc", "cache_control": {"type": "ephemeral"}}
        assert "A maximum of 4 blocks" in invalid(body(messages=[{"role": "user", "content": [block] * 5}]))


class TestAnswer:
    def request(self, **overrides: Any) -> InvokeRequest:
        return parse_invoke(body(**overrides), SONNET_45)

    def test_answer_is_a_messages_response(self) -> None:
        """The body has the Messages fields and a usage block."""
        answer = render_answer(self.request(), SONNET_45, seed=1, output_tokens=30, message_id="msg_bdrk_01x")
        data = json.loads(answer.body)
        assert data["type"] == "message" and data["role"] == "assistant"
        assert data["model"] == "claude-sonnet-4-5-20250929"
        assert data["stop_reason"] == "end_turn" and data["stop_sequence"] is None
        assert data["usage"] == {
            "input_tokens": 3,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 30,
        }
        assert len(data["content"][0]["text"].split()) == 30

    def test_output_is_capped_by_max_tokens(self) -> None:
        """An answer longer than max_tokens stops there with stop_reason max_tokens."""
        answer = render_answer(
            self.request(max_tokens=10), SONNET_45, seed=1, output_tokens=30, message_id="msg_bdrk_01x"
        )
        assert answer.output_tokens == 10
        assert json.loads(answer.body)["stop_reason"] == "max_tokens"

    def test_text_depends_on_prompt_and_seed_only(self) -> None:
        """Sampling parameters do not change the words; the seed and the prompt do."""
        a = self.request(temperature=0.2)
        b = self.request(top_p=0.5, max_tokens=300)
        assert answer_text(a.prompt_key, 1, 20) == answer_text(b.prompt_key, 1, 20)
        assert answer_text(a.prompt_key, 1, 20) != answer_text(a.prompt_key, 2, 20)
        c = self.request(messages=[{"role": "user", "content": "Something else"}])
        assert answer_text(a.prompt_key, 1, 20) != answer_text(c.prompt_key, 1, 20)

    def test_stop_sequence_cuts_the_answer(self) -> None:
        """The earliest stop sequence found ends the text and is reported."""
        words = answer_text(self.request().prompt_key, 4, 40).split()
        stop = words[10]
        request = self.request(stop_sequences=[" " + stop + " ", "zzzz"])
        answer = render_answer(request, SONNET_45, seed=4, output_tokens=40, message_id="msg_bdrk_01x")
        data = json.loads(answer.body)
        assert data["stop_reason"] == "stop_sequence"
        assert data["stop_sequence"] == " " + stop + " "
        assert stop not in data["content"][0]["text"].split()[10:]
        assert answer.output_tokens < 40

    def test_forced_tool_answers_tool_use(self) -> None:
        """tool_choice naming a tool gets a tool_use block with inputs of the schema's types."""
        tool = {
            "name": "record",
            "input_schema": {
                "type": "object",
                "properties": {"label": {"type": "string"}, "n": {"type": "integer"}},
            },
        }
        request = self.request(tools=[tool], tool_choice={"type": "tool", "name": "record"})
        data = json.loads(render_answer(request, SONNET_45, seed=1, output_tokens=5, message_id="m").body)
        assert data["stop_reason"] == "tool_use"
        assert data["content"][0]["name"] == "record"
        assert data["content"][0]["input"]["n"] == 0
        assert isinstance(data["content"][0]["input"]["label"], str)

    def test_forced_tool_input_matches_its_schema(self) -> None:
        """Nested objects, arrays, enums, booleans and numbers all get values of their schema's types."""
        schema = {
            "type": "object",
            "properties": {
                "label": {"type": "string", "enum": ["positive", "negative", "mixed"]},
                "score": {"type": "number", "minimum": 0.25},
                "flags": {"type": "array", "items": {"type": "integer"}},
                "detail": {
                    "type": "object",
                    "properties": {"ok": {"type": "boolean"}, "note": {"type": ["string", "null"]}},
                },
                "kind": {"const": "review"},
            },
        }
        tool = {"name": "classify", "input_schema": schema}
        request = self.request(tools=[tool], tool_choice={"type": "any"})
        data = json.loads(render_answer(request, SONNET_45, seed=1, output_tokens=5, message_id="m").body)
        (block,) = data["content"]
        value = block["input"]
        assert value["label"] in ("positive", "negative", "mixed")
        assert value["score"] == 0.25
        assert value["flags"] == [0]
        assert isinstance(value["detail"]["ok"], bool)
        assert isinstance(value["detail"]["note"], str)
        assert value["kind"] == "review"

    def test_thinking_enabled_answers_a_thinking_block(self) -> None:
        """With thinking enabled the answer starts with a thinking block (with a signature), then the
        text; usage counts both."""
        request = self.request(max_tokens=4000, thinking={"type": "enabled", "budget_tokens": 1024})
        answer = render_answer(request, SONNET_45, seed=1, output_tokens=40, message_id="m")
        data = json.loads(answer.body)
        kinds = [block["type"] for block in data["content"]]
        assert kinds == ["thinking", "text"]
        thinking, text = data["content"]
        assert thinking["thinking"] and thinking["signature"]
        words = len(thinking["thinking"].split()) + len(text["text"].split())
        assert data["usage"]["output_tokens"] == answer.output_tokens == 40 == words

    def test_thinking_disabled_answers_text_only(self) -> None:
        """thinking: disabled is a plain answer."""
        request = self.request(thinking={"type": "disabled"})
        data = json.loads(render_answer(request, SONNET_45, seed=1, output_tokens=10, message_id="m").body)
        assert [block["type"] for block in data["content"]] == ["text"]

    def test_thinking_with_a_forced_tool_is_refused(self) -> None:
        """Thinking cannot be combined with a tool_choice that forces a tool, as on the real service."""
        tool = {"name": "record", "input_schema": {"type": "object", "properties": {}}}
        with pytest.raises(BedrockError, match="Thinking may not be enabled"):
            parse_invoke(
                body(
                    max_tokens=4000,
                    thinking={"type": "enabled", "budget_tokens": 1024},
                    tools=[tool],
                    tool_choice={"type": "tool", "name": "record"},
                ),
                SONNET_45,
            )


class TestPromptCache:
    def cached(self, text: str, **control: Any) -> InvokeRequest:
        system = [{"type": "text", "text": text, "cache_control": {"type": "ephemeral", **control}}]
        return parse_invoke(body(system=system), SONNET_45)

    def test_creation_then_reads(self) -> None:
        """The first request writes the prefix, the next ones read it."""
        cache = PromptCache()
        request = self.cached("x" * 4000)
        first = cache.lookup("m", request.cache_points, 0.0)
        assert (first.read, first.write) == (0, 1000)
        cache.store("m", request.cache_points, 0.0)
        second = cache.lookup("m", request.cache_points, 1.0)
        assert (second.read, second.write) == (1000, 0)

    def test_later_breakpoint_reads_the_earlier_prefix(self) -> None:
        """Moving the breakpoint further reads what was cached and writes only the difference."""
        cache = PromptCache()
        first_turn = [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a" * 400, "cache_control": {"type": "ephemeral"}}],
            }
        ]
        request = parse_invoke(body(messages=first_turn), SONNET_45)
        cache.store("m", request.cache_points, 0.0)
        second_turn = [
            {"role": "user", "content": [{"type": "text", "text": "a" * 400}]},
            {"role": "assistant", "content": "b" * 400},
            {
                "role": "user",
                "content": [{"type": "text", "text": "c" * 400, "cache_control": {"type": "ephemeral"}}],
            },
        ]
        use = cache.lookup("m", parse_invoke(body(messages=second_turn), SONNET_45).cache_points, 1.0)
        assert (use.read, use.write) == (100, 200)

    def test_entries_expire(self) -> None:
        """After the ttl the prefix is written again; ttl = 1h lives longer."""
        cache = PromptCache(ttl_s=300)
        short, long = self.cached("y" * 400), self.cached("z" * 400, ttl="1h")
        cache.store("m", short.cache_points, 0.0)
        cache.store("m", long.cache_points, 0.0)
        assert cache.lookup("m", short.cache_points, 301.0).write == 100
        assert cache.lookup("m", long.cache_points, 301.0).read == 100

    def test_short_prefixes_below_the_minimum_are_not_cached(self) -> None:
        """With a minimum set, a short prefix is neither written nor read."""
        cache = PromptCache(min_tokens=1024)
        request = self.cached("x" * 400)
        assert cache.lookup("m", request.cache_points, 0.0).write == 0
        cache.store("m", request.cache_points, 0.0)
        assert len(cache) == 0

    def test_cache_is_per_model(self) -> None:
        """Another model does not read this model's prefixes."""
        cache = PromptCache()
        request = self.cached("x" * 400)
        cache.store("a", request.cache_points, 0.0)
        assert cache.lookup("b", request.cache_points, 0.0).read == 0

    def test_bounded(self) -> None:
        """The oldest prefixes are evicted past max_entries."""
        cache = PromptCache(max_entries=2)
        for i in range(3):
            cache.store("m", self.cached(f"{i}" * 40).cache_points, 0.0)
        assert len(cache) == 2


class TestRoutes:
    @pytest.mark.parametrize(
        ("profile", "region", "error"),
        [
            ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "us-east-1", None),
            ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "eu-west-1", None),
            ("anthropic.claude-3-haiku-20240307-v1:0", "eu-west-1", None),
            ("anthropic.claude-nonexistent-v1:0", "us-east-1", "ResourceNotFoundException"),
            ("apac.anthropic.claude-sonnet-4-5-20250929-v1:0", "ap-southeast-1", "ResourceNotFoundException"),
            ("global.anthropic.claude-opus-4-1-20250805-v1:0", "us-east-1", "ResourceNotFoundException"),
            ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "us-east-1", "ResourceNotFoundException"),
        ],
    )
    def test_route_validity(self, profile: str, region: str, error: str | None) -> None:
        """Unknown ids are invalid; missing geographies and wrong regions are not found."""
        _, exc = route_error(profile, region)
        assert (exc.name if exc else None) == error

    @pytest.mark.parametrize(
        ("header", "region"),
        [
            (
                "AWS4-HMAC-SHA256 Credential=AKID/20260101/eu-west-3/bedrock/aws4_request, "
                "SignedHeaders=host, Signature=abc",
                "eu-west-3",
            ),
            (None, "us-east-1"),
            ("Bearer token", "us-east-1"),
        ],
    )
    def test_region_from_sigv4(self, header: str | None, region: str) -> None:
        """The region comes from the credential scope, us-east-1 without one."""
        assert region_of(header) == region

    def test_outage_windows(self) -> None:
        """An outage covers [start, end) on its own clock."""
        config = EmulatorConfig.from_dict(
            {
                "defaults": {
                    "outages": [{"start_s": 1, "end_s": 2}, {"start_s": 5, "end_s": 6, "since": "start"}]
                }
            }
        )
        outages = config.defaults.outages
        assert outage_error(outages, since_start=0, since_set=1.0) == "ServiceUnavailableException"
        assert outage_error(outages, since_start=0, since_set=2.0) is None
        assert outage_error(outages, since_start=5.5, since_set=0) == "ServiceUnavailableException"

    def test_error_statuses_match_the_service_model(self) -> None:
        """Statuses are botocore's (bedrock-runtime service-2.json)."""
        expected = {
            "ThrottlingException": 429,
            "ModelNotReadyException": 429,
            "ServiceUnavailableException": 503,
            "InternalServerException": 500,
            "ModelTimeoutException": 408,
            "ModelErrorException": 424,
            "ValidationException": 400,
            "AccessDeniedException": 403,
            "ResourceNotFoundException": 404,
            "ServiceQuotaExceededException": 400,
        }
        assert {name: ERRORS[name].status for name in expected} == expected


class TestControlPlane:
    def test_foundation_models_filter_by_provider(self) -> None:
        """Anthropic lists the catalogue; another provider lists nothing."""
        assert len(list_foundation_models("us-east-1", {"byProvider": "anthropic"})["modelSummaries"]) == 10
        assert list_foundation_models("us-east-1", {"byProvider": "meta"}) == {"modelSummaries": []}

    def test_profiles_follow_the_region(self) -> None:
        """A region lists global profiles and its own geography's, nothing else."""
        ids = {
            p["inferenceProfileId"]
            for p in list_inference_profiles("eu-west-1", {})["inferenceProfileSummaries"]
        }
        assert "eu.anthropic.claude-sonnet-4-5-20250929-v1:0" in ids
        assert "global.anthropic.claude-sonnet-4-5-20250929-v1:0" in ids
        assert not any(i.startswith("us.") for i in ids)

    def test_pagination(self) -> None:
        """maxResults pages through with nextToken."""
        page = list_inference_profiles("us-east-1", {"maxResults": "3"})
        assert len(page["inferenceProfileSummaries"]) == 3
        rest = list_inference_profiles("us-east-1", {"nextToken": page["nextToken"], "maxResults": "1000"})
        assert "nextToken" not in rest

    def test_get_profile_elsewhere_is_not_found(self) -> None:
        """A profile outside the caller's geography is not found."""
        with pytest.raises(BedrockError, match="ResourceNotFoundException"):
            get_inference_profile("us-east-1", "eu.anthropic.claude-sonnet-4-5-20250929-v1:0")


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70_000) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_block = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image", "document", "tool_use", "tool_result", "thinking", "x"])},
    optional={
        "text": _json,
        "source": _json,
        "cache_control": _json,
        "id": _json,
        "name": _json,
        "input": _json,
    },
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system"]), "content": st.one_of(_json, st.lists(_block))}
)
_body = st.fixed_dictionaries(
    {},
    optional={
        "anthropic_version": st.sampled_from(["bedrock-2023-05-31", "x"]),
        "max_tokens": _json,
        "messages": st.one_of(_json, st.lists(_message, max_size=4)),
        "system": st.one_of(_json, st.lists(_block, max_size=2)),
        "temperature": _json,
        "top_p": _json,
        "stop_sequences": _json,
        "anthropic_beta": _json,
        "tools": _json,
        "tool_choice": _json,
        "thinking": _json,
    },
)


@given(_body)
def test_any_body_is_answered_or_refused_cleanly(data: dict[str, Any]) -> None:
    """Whatever the body's shape, validation either accepts it or raises a BedrockError, nothing else."""
    raw = json.dumps(data).encode()
    try:
        request = parse_invoke(raw, SONNET_45)
    except BedrockError as exc:
        assert exc.name == "ValidationException"
        return
    answer = render_answer(request, SONNET_45, seed=0, output_tokens=40, message_id="m")
    assert 1 <= answer.output_tokens <= request.max_tokens
