"""``models``: the catalogue with prices, and what the account sees (asked of the emulator)."""

from __future__ import annotations

import json
import socket
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from click.testing import CliRunner

from runner import catalog
from runner.cli.models import check_account, models_command, profile_mark
from runner.emulator import EmulatorThread
from runner.job import run_job
from tests.helpers import make_spec, spec_data, write_prompts

SONNET_45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"


def run_json(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(models_command, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def by_id(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["base_id"]: m for m in data["models"]}


class TestCatalogue:
    def test_without_credentials(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """No credentials: the whole catalogue with prices, and a note instead of an account check."""
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        data = run_json()
        assert data["region"] == catalog.DEFAULT_REGION
        assert data["region_source"] == "default"
        assert data["account"]["checked"] is False
        assert "no AWS credentials" in data["account"]["note"]
        assert set(by_id(data)) == {m.base_id for m in catalog.MODELS}
        sonnet = by_id(data)[SONNET_45]
        assert sonnet["price_usd_per_million"]["input"] == 3
        assert sonnet["regional_surcharge"] is True
        assert sonnet["profiles"]["global"]["id"] == f"global.{SONNET_45}"
        assert sonnet["account"] is None

    def test_burndown_unverified_is_marked(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The table marks burndown figures the catalogue has not verified, and deprecations."""
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        result = CliRunner().invoke(models_command, [])
        assert result.exit_code == 0, result.output
        assert "(unverified)" in result.stdout
        assert "2025-06-30" in result.stdout
        assert "Note: no AWS credentials found" in result.stdout

    def test_bad_prices_file(self, tmp_path: Any) -> None:
        """A bad --prices file is exit 2 and one line naming it."""
        path = tmp_path / "p.toml"
        path.write_text("[models\n", encoding="utf-8")
        result = CliRunner().invoke(models_command, ["--prices", str(path)])
        assert result.exit_code == 2
        assert str(path) in result.stderr


class TestAccount:
    def test_emulator_lists_everything(self, emu: EmulatorThread) -> None:
        """Against the emulator from us-east-1: models visible, global and us. profiles visible."""
        data = run_json("--endpoint-url", emu.url, "--region", "us-east-1")
        assert data["account"]["checked"] is True
        assert data["account"]["note"] is None
        models = by_id(data)
        assert all(m["account"]["visible"] for m in models.values())
        sonnet = models[SONNET_45]["profiles"]
        assert sonnet["global"]["account"] == "visible"
        assert sonnet["us"]["account"] == "visible"
        assert sonnet["eu"]["account"] == "n/a"  # an eu. profile is not callable from us-east-1

    def test_emulator_other_region(self, emu: EmulatorThread) -> None:
        """From eu-west-1 the eu. profiles are visible and the us. ones are not expected."""
        sonnet = by_id(run_json("--endpoint-url", emu.url, "--region", "eu-west-1"))[SONNET_45]
        assert sonnet["profiles"]["eu"]["account"] == "visible"
        assert sonnet["profiles"]["us"]["account"] == "n/a"

    def test_table_marks(self, emu: EmulatorThread) -> None:
        """The terminal view has the account column with marks."""
        result = CliRunner().invoke(models_command, ["--endpoint-url", emu.url])
        assert result.exit_code == 0, result.output
        assert "account" in result.stdout
        assert "✓" in result.stdout

    def test_unreachable_endpoint(self) -> None:
        """An endpoint nobody listens on: the catalogue and a one-line note, exit 0."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        data = run_json("--endpoint-url", f"http://127.0.0.1:{port}")
        assert data["account"]["checked"] is False
        assert data["account"]["note"].startswith("could not reach http://127.0.0.1:")
        assert len(data["models"]) == len(catalog.MODELS)

    def test_access_denied(self) -> None:
        """AccessDenied on the listing becomes a note naming the error, not a traceback."""
        client = boto3.client("bedrock", region_name="us-east-1")
        with Stubber(client) as stub:
            stub.add_client_error(
                "list_foundation_models",
                service_error_code="AccessDeniedException",
                service_message="User is not authorized to perform bedrock:ListFoundationModels",
                http_status_code=403,
            )
            check = check_account("us-east-1", None, client=client)
        assert check.view is None
        assert check.note is not None
        assert "AccessDeniedException: User is not authorized" in check.note

    def test_missing_profile(self) -> None:
        """A catalogue profile the region should list but does not is marked missing."""
        client = boto3.client("bedrock", region_name="us-east-1")
        with Stubber(client) as stub:
            stub.add_response(
                "list_foundation_models",
                {"modelSummaries": [_summary(SONNET_45)]},
                {"byProvider": "anthropic"},
            )
            stub.add_response(
                "list_inference_profiles",
                {"inferenceProfileSummaries": [_profile(f"us.{SONNET_45}")], "nextToken": "1"},
                {"typeEquals": "SYSTEM_DEFINED"},
            )
            stub.add_response(
                "list_inference_profiles",
                {"inferenceProfileSummaries": [_profile("us.anthropic.claude-next-v1:0")]},
                {"typeEquals": "SYSTEM_DEFINED", "nextToken": "1"},
            )
            check = check_account("us-east-1", None, client=client)
        assert check.view is not None
        assert check.view.profiles == {f"us.{SONNET_45}", "us.anthropic.claude-next-v1:0"}
        assert profile_mark(check.view, f"global.{SONNET_45}", "global") == "missing"
        assert profile_mark(check.view, f"us.{SONNET_45}", "us") == "visible"


def _summary(model_id: str) -> dict[str, Any]:
    return {
        "modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{model_id}",
        "modelId": model_id,
        "modelLifecycle": {"status": "ACTIVE"},
    }


def _profile(profile_id: str) -> dict[str, Any]:
    return {
        "inferenceProfileName": profile_id,
        "inferenceProfileArn": f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{profile_id}",
        "models": [{"modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{profile_id[3:]}"}],
        "inferenceProfileId": profile_id,
        "status": "ACTIVE",
        "type": "SYSTEM_DEFINED",
    }


def bedrock_client(emu: EmulatorThread, region: str) -> Any:
    return boto3.client("bedrock", region_name=region, endpoint_url=emu.url)


LOGGING_CONFIG = {
    "cloudWatchConfig": {
        "logGroupName": "/bedrock/invocations",
        "roleArn": "arn:aws:iam::123456789012:role/bedrock-logging",
    },
    "textDataDeliveryEnabled": True,
}


class TestInvocationLogging:
    def test_off_then_on_per_region(self, emu: EmulatorThread) -> None:
        """`models` reports per region whether invocation logging is on, from
        GetModelInvocationLoggingConfiguration."""
        args = ("--endpoint-url", emu.url, "--region", "us-east-1", "--region", "eu-west-1")
        before = run_json(*args)["invocation_logging"]
        assert before == {
            "us-east-1": {"enabled": False, "destinations": [], "note": None},
            "eu-west-1": {"enabled": False, "destinations": [], "note": None},
        }
        bedrock_client(emu, "eu-west-1").put_model_invocation_logging_configuration(
            loggingConfig=LOGGING_CONFIG
        )
        after = run_json(*args)["invocation_logging"]
        assert after["us-east-1"]["enabled"] is False
        assert after["eu-west-1"] == {
            "enabled": True,
            "destinations": ["CloudWatch Logs /bedrock/invocations"],
            "note": None,
        }

    def test_the_table_says_how_to_turn_it_on(self, emu: EmulatorThread) -> None:
        """The terminal view has one line per region, pointing at the README when logging is off."""
        result = CliRunner().invoke(models_command, ["--endpoint-url", emu.url])
        assert result.exit_code == 0, result.output
        assert "Invocation logging in us-east-1: OFF" in result.stdout
        assert "README.md" in result.stdout

    def test_no_credentials_is_unknown(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without credentials the check is unknown, not a failure."""
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        logging = run_json()["invocation_logging"]
        assert logging[catalog.DEFAULT_REGION]["enabled"] is None

    def test_preflight_warns_when_it_is_off(self, emu: EmulatorThread, tmp_path: Any) -> None:
        """Preflight logs a warning per region where invocation logging is off, and the job goes on."""
        source = write_prompts(tmp_path / "in.parquet", 3)
        data = spec_data(source, tmp_path / "out", emu.url, model={"preflight": True})
        assert run_job(make_spec(tmp_path, data), handle_signals=False, progress=False).exit_code == 0
        events = [
            json.loads(line) for line in (tmp_path / "out" / "_job" / "events.jsonl").read_text().splitlines()
        ]
        off = [e for e in events if e["event"] == "logging.invocation_off"]
        assert [(e["region"], e["level"]) for e in off] == [("us-east-1", "warning")]
        bedrock_client(emu, "us-east-1").put_model_invocation_logging_configuration(
            loggingConfig=LOGGING_CONFIG
        )
        data["job"]["output"] = str(tmp_path / "out2")
        run_job(make_spec(tmp_path, data, "job2.toml"), handle_signals=False, progress=False)
        events = [
            json.loads(line)
            for line in (tmp_path / "out2" / "_job" / "events.jsonl").read_text().splitlines()
        ]
        assert any(e["event"] == "logging.invocation_on" for e in events)
        assert not any(e["event"] == "logging.invocation_off" for e in events)
