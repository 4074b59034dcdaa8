"""Job spec validation: exact messages naming file and key, CLI overrides, the request digest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.errors import SpecError
from runner.spec import load_spec, spec_from_dict

HAIKU = "anthropic.claude-haiku-4-5-20251001-v1:0"


def base(**sections: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "job": {"input": "in.parquet", "output": "out"},
        "model": {"id": HAIKU},
        "columns": {"prompt": "text"},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw


class TestValid:
    def test_demo_spec_loads(self) -> None:
        """The shipped demo spec is valid."""
        spec = load_spec(Path(__file__).parents[2] / "jobs" / "demo.toml")
        assert spec.name == "demo"
        assert spec.limits.max_in_flight == 128

    def test_defaults_fill_missing_sections(self) -> None:
        """Sections left out take their documented defaults."""
        spec = spec_from_dict(base())
        assert spec.retry.max_attempts == 8
        assert spec.request.max_tokens == 1024

    def test_int_is_accepted_for_float(self) -> None:
        """`temperature = 1` is a number like 1.0."""
        assert spec_from_dict(base(request={"temperature": 1})).request.temperature == 1.0

    def test_cli_overrides_win(self, tmp_path: Path) -> None:
        """Dotted overrides replace the file's values; None means not given."""
        path = tmp_path / "job.toml"
        path.write_text(
            f'[job]\ninput = "a"\noutput = "b"\n[model]\nid = "{HAIKU}"\n[columns]\nprompt = "p"\n'
        )
        spec = load_spec(path, {"job.input": "c", "limits.max_in_flight": 7, "job.output": None})
        assert (spec.job.input, spec.job.output, spec.limits.max_in_flight) == ("c", str(tmp_path / "b"), 7)

    def test_region_falls_back_to_env_then_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Region: spec, else AWS_REGION, else us-east-1."""
        monkeypatch.delenv("AWS_REGION", raising=False)
        assert spec_from_dict(base()).region == "us-east-1"
        monkeypatch.setenv("AWS_REGION", "eu-west-1")
        assert spec_from_dict(base()).region == "eu-west-1"
        assert spec_from_dict(base(model={"region": "us-west-2"})).region == "us-west-2"


class TestPaths:
    def write(self, path: Path, job: str, output: str = "") -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f'[job]\n{job}\n[model]\nid = "{HAIKU}"\n[columns]\nprompt = "p"\n{output}', encoding="utf-8"
        )
        return path

    def test_input_and_output_are_relative_to_the_spec_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`input`, `output` and `[output] prices` resolve against the spec's directory, not the cwd."""
        monkeypatch.chdir(tmp_path)
        path = self.write(
            tmp_path / "jobs" / "x.toml",
            'input = "../data/in.parquet"\noutput = "out/x"',
            '[output]\nprices = "prices.toml"\n',
        )
        spec = load_spec(Path("jobs/x.toml"))
        assert spec.job.input == str(tmp_path / "data" / "in.parquet")
        assert spec.job.output == str(tmp_path / "jobs" / "out" / "x")
        assert spec.output.prices == str(tmp_path / "jobs" / "prices.toml")
        assert load_spec(path) == spec  # wherever it is loaded from

    def test_absolute_and_s3_paths_stay(self, tmp_path: Path) -> None:
        """Absolute paths and s3:// URIs are used as written."""
        path = self.write(tmp_path / "x.toml", 'input = "s3://bucket/prompts/"\noutput = "/srv/out"')
        spec = load_spec(path)
        assert (spec.job.input, spec.job.output) == ("s3://bucket/prompts/", "/srv/out")

    def test_a_missing_input_names_the_absolute_path_tried(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The error for a missing input shows the absolute path it tried, resolved beside the spec."""
        from runner.errors import SourceError
        from runner.source import Source

        monkeypatch.chdir(tmp_path)
        path = self.write(tmp_path / "jobs" / "x.toml", 'input = "in.parquet"\noutput = "out"')
        with pytest.raises(SourceError) as caught:
            Source(load_spec(Path("jobs/x.toml")))
        assert str(caught.value).startswith(f"{tmp_path / 'jobs' / 'in.parquet'}: no such file")
        assert path.exists()


ERRORS = [
    ({"job": {"output": None}}, r"\[job\] `output` is required"),
    ({"model": {"id": ""}}, r"\[model\] `id` must not be empty"),
    ({"model": {"id": "gpt-4"}}, r"\[model\] `id` 'gpt-4' is not a Claude model on Bedrock"),
    ({"model": {"idd": "x"}}, r"\[model\] unknown key `idd`"),
    ({"limits": {"max_in_flight": "many"}}, r"\[limits\] `max_in_flight` must be an integer, not str"),
    ({"limits": {"max_in_flight": 0}}, r"\[limits\] `max_in_flight` must be greater than 0"),
    ({"limits": {"max_in_flight": True}}, r"must be an integer, not bool"),
    ({"request": {"max_tokens": 70000}}, r"`max_tokens` must be between 1 and 64000 for Claude Haiku 4.5"),
    ({"request": {"temperature": 0.5, "top_p": 0.9}}, r"Claude Haiku 4.5 accepts `temperature` or `top_p`"),
    ({"request": {"extra": {"messages": []}}}, r"`extra` must not set 'messages'"),
    ({"columns": {"prompt": None}}, r"needs one of `prompt`, `messages` or `template`"),
    ({"columns": {"messages": "m"}}, r"`messages` cannot be combined"),
    ({"columns": {"overrides": {"model": "m"}}}, r"`overrides` key 'model' is not one of"),
    ({"model": {"residency": "global"}}, r"`residency` must be one of us, eu, jp, apac"),
    ({"model": {"endpoints": ["mars"]}}, r"`endpoints` has 'mars'"),
    ({"job": {"mode": "later"}}, r"\[job\] `mode` must be one of 'on_demand', 'batch'"),
    ({"job": {"mode": "batch"}}, r"mode = 'batch' needs \[batch\] `role_arn`"),
    ({"batch": {"timeout_hours": 200}}, r"`timeout_hours` must be between 24 and 168"),
    ({"retry": {"backoff_initial_s": 5, "backoff_max_s": 1}}, r"backoff_initial_s"),
    ({"nonsense": {}}, r"unknown section \[nonsense\]"),
    # issue 12: request parameters Bedrock would refuse in every row
    ({"request": {"temperature": 5}}, r"\[request\] `temperature` must be between 0 and 1, not 5.0"),
    ({"request": {"top_p": 1.5}}, r"\[request\] `top_p` must be between 0 and 1, not 1.5"),
    ({"request": {"top_k": -5}}, r"\[request\] `top_k` must not be negative, not -5"),
    ({"request": {"stop_sequences": ["END", " "]}}, r"`stop_sequences` item 1 is empty or whitespace"),
    ({"request": {"stop_sequences": [""]}}, r"`stop_sequences` item 0 is empty or whitespace"),
    ({"request": {"extra": {"model": "x"}}}, r"`extra` key 'model' is not a body key Bedrock accepts"),
    ({"request": {"extra": {"temperature": 5}}}, r"`extra` must not set 'temperature'; use \[request\]"),
    ({"request": {"extra": {"tools": {}}}}, r"`tools` must be a list of tables"),
    ({"request": {"extra": {"tools": [{}]}}}, r"`tools` item 0 needs a `name`"),
    ({"request": {"extra": {"tool_choice": {"type": "auto"}}}}, r"sets `tool_choice` without `tools`"),
    (
        {"request": {"extra": {"tools": [{"name": "t"}], "tool_choice": {"type": "some"}}}},
        r"`tool_choice` must be a table whose `type` is one of auto, any, tool, none",
    ),
    ({"request": {"extra": {"thinking": {"type": "on"}}}}, r"`thinking` must be a table whose `type`"),
    (
        {"request": {"extra": {"thinking": {"type": "enabled", "budget_tokens": 10}}}},
        r"`thinking.budget_tokens` must be an integer of at least 1024",
    ),
    (
        {"request": {"max_tokens": 2000, "extra": {"thinking": {"type": "enabled", "budget_tokens": 4000}}}},
        r"`thinking.budget_tokens` \(4000\) must be less than \[request\] `max_tokens` \(2000\)",
    ),
    (
        {
            "request": {
                "max_tokens": 8000,
                "temperature": 0.5,
                "extra": {"thinking": {"type": "enabled", "budget_tokens": 2000}},
            }
        },
        r"`temperature` may only be 1 with thinking enabled",
    ),
    ({"request": {"extra": {"metadata": "me"}}}, r"`metadata` must be a table"),
    ({"request": {"extra": {"tools": [{"name": "t", "x": float("nan")}]}}}, r"holds nan; numbers must be"),
    ({"request": {"temperature": float("nan")}}, r"`temperature` must be a finite number, not nan"),
    # issue 12: kept columns that collide with result columns
    ({"columns": {"keep": ["status"]}}, r"`keep` has 'status', which results.parquet already uses"),
    ({"columns": {"keep": ["id"]}}, r"`keep` has 'id', which results.parquet already uses"),
    ({"columns": {"keep": ["_index"]}}, r"`keep` has '_index', which results.parquet already uses"),
    ({"columns": {"keep": ["team", "team"]}}, r"`keep` names 'team' twice"),
    # issue 12: a ceiling for max_in_flight, known regions
    ({"limits": {"max_in_flight": 100_000}}, r"`max_in_flight` must be at most 4096, not 100000"),
    ({"model": {"region": "eu-wst-1"}}, r"\[model\] `region` 'eu-wst-1' is not a Bedrock region.*eu-west-1"),
    ({"model": {"region": "xx-nowhere-9"}}, r"\[model\] `region` 'xx-nowhere-9' is not a Bedrock region"),
]


def _float_keys() -> list[tuple[str, str]]:
    """Every ``[section] key`` of the spec whose type is a float (or an optional one)."""
    import dataclasses
    import typing

    from runner.spec import _SECTIONS

    keys = []
    for section, cls in _SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if float in (hints[f.name], *typing.get_args(hints[f.name])):
                keys.append((section, f.name))
    return keys


class TestErrors:
    @pytest.mark.parametrize(("override", "message"), ERRORS)
    def test_error_names_file_and_key(self, override: dict[str, dict[str, Any]], message: str) -> None:
        """Each invalid setting is a SpecError whose message names the source and the key."""
        raw = base()
        for section, values in override.items():
            target = raw.setdefault(section, {})
            for key, value in values.items():
                if value is None:
                    target.pop(key, None)  # None in the table means: leave the key out
                else:
                    target[key] = value
        with pytest.raises(SpecError, match=message) as info:
            spec_from_dict(raw, source="jobs/x.toml")
        assert str(info.value).startswith("jobs/x.toml: ")

    @pytest.mark.parametrize(("section", "key"), _float_keys())
    @pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
    def test_every_float_key_refuses_nan_and_infinity(self, section: str, key: str, value: float) -> None:
        """NaN and infinities are refused in every float key (a NaN cost cap used to disable the cap)."""
        with pytest.raises(SpecError, match=rf"\[{section}\] `{key}` must be a finite number"):
            spec_from_dict(base(**{section: {key: value}}), source="jobs/x.toml")

    def test_float_keys_are_found(self) -> None:
        """The NaN test covers the float keys the issue names (and more)."""
        keys = {k for _, k in _float_keys()}
        assert {"temperature", "top_p", "max_cost_usd", "part_seconds", "timeout_s"} <= keys

    def test_missing_file(self, tmp_path: Path) -> None:
        """A spec path that does not exist says so."""
        with pytest.raises(SpecError, match="no such job spec file"):
            load_spec(tmp_path / "nope.toml")

    def test_invalid_toml(self, tmp_path: Path) -> None:
        """A file that is not TOML names the parse error."""
        path = tmp_path / "bad.toml"
        path.write_text("[job\n")
        with pytest.raises(SpecError, match="not valid TOML"):
            load_spec(path)


class TestDigest:
    def test_limits_do_not_change_the_digest(self) -> None:
        """Changing concurrency or retries does not make done rows run again."""
        a = spec_from_dict(base())
        b = spec_from_dict(base(limits={"max_in_flight": 3}, retry={"max_attempts": 2}))
        assert a.request_digest() == b.request_digest()

    @given(st.text(min_size=1, max_size=40))
    def test_system_prompt_changes_the_digest(self, system: str) -> None:
        """Any change to the system prompt changes the digest, so rows run again."""
        a = spec_from_dict(base(columns={"system": "fixed"}))
        b = spec_from_dict(base(columns={"system": "fixed" + system}))
        assert a.request_digest() != b.request_digest()

    def test_model_changes_the_digest(self) -> None:
        """A different model is a different request."""
        a = spec_from_dict(base())
        b = spec_from_dict(base(model={"id": "anthropic.claude-sonnet-4-5-20250929-v1:0"}))
        assert a.request_digest() != b.request_digest()


class TestRegions:
    def _spec(self, **model: object) -> dict[str, object]:
        return {
            "job": {"input": "in.parquet", "output": "out"},
            "model": {"id": "anthropic.claude-sonnet-4-5-20250929-v1:0", **model},
            "columns": {"prompt": "p"},
        }

    def test_regions_list_the_source_regions(self) -> None:
        """`[model] regions` are the job's source regions; the first is its home region."""
        spec = spec_from_dict(self._spec(regions=["us-west-2", "us-east-1"]))
        assert spec.regions == ["us-west-2", "us-east-1"]
        assert spec.region == "us-west-2"

    def test_a_region_outside_residency_is_refused(self) -> None:
        """A listed region outside the residency geography is a spec error naming it."""
        with pytest.raises(SpecError, match="'us-east-1' is outside `residency` 'eu'"):
            spec_from_dict(self._spec(regions=["eu-west-1", "us-east-1"], residency="eu"))

    def test_tpm_per_region_and_per_route(self) -> None:
        """A `tpm` table gives a route its own entry, else its region's, else 0 (found adaptively)."""
        raw = self._spec(regions=["us-east-1", "us-west-2", "us-east-2"])
        raw["limits"] = {"tpm": {"us-east-1": 800_000, "global@us-west-2": 400_000}}
        spec = spec_from_dict(raw)
        assert spec.tpm_for("global@us-east-1", "us-east-1") == 800_000
        assert spec.tpm_for("global@us-west-2", "us-west-2") == 400_000
        assert spec.tpm_for("us@us-west-2", "us-west-2") == 0
        assert spec.tpm_for("global@us-east-2", "us-east-2") == 0

    def test_a_negative_tpm_in_the_table_names_its_key(self) -> None:
        """A negative entry of the `tpm` table is refused with its key."""
        raw = self._spec()
        raw["limits"] = {"tpm": {"us-east-1": -5}}
        with pytest.raises(SpecError, match="`tpm` 'us-east-1' must not be negative"):
            spec_from_dict(raw)

    def test_region_flag_takes_a_list(self) -> None:
        """`--region us-east-1,us-west-2` sets the source regions, the first being the home region."""
        from runner.spec import resolve_spec

        spec = resolve_spec(spec_from_dict(self._spec(region="eu-west-1")), region="us-east-1,us-west-2")
        assert spec.regions == ["us-east-1", "us-west-2"]
        assert spec.region == "us-east-1"
