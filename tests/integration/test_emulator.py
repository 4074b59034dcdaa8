"""The emulator over real loopback HTTP, driven by the real aioboto3 and boto3 clients.

Every path is checked the way the runner meets it: what botocore raises (``client.exceptions.X``,
``response["Error"]["Code"]``, the status), what the body and headers hold, what the counters bill.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import aioboto3
import aiohttp
import anyio
import boto3
import botocore.config
import botocore.exceptions
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.emulator import Emulator, EmulatorConfig, EmulatorThread, serve
from runner.emulator.cli import READY_PREFIX, main

SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
GLOBAL_SONNET = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
ERROR_STATUS = {
    "ThrottlingException": 429,
    "ServiceUnavailableException": 503,
    "ValidationException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ModelErrorException": 424,
    "InternalServerException": 500,
    "ModelNotReadyException": 429,
    "ServiceQuotaExceededException": 400,
}
ROOT = Path(__file__).resolve().parents[2]


def request_body(text: str = "Hello there", max_tokens: int = 100, **extra: Any) -> str:
    return json.dumps(
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": text}],
            **extra,
        }
    )


def client_config(**kwargs: Any) -> botocore.config.Config:
    return botocore.config.Config(retries={"total_max_attempts": 1}, **kwargs)


@asynccontextmanager
async def runtime(url: str, region: str = "us-east-1", **config: Any) -> AsyncIterator[Any]:
    """The real aioboto3 bedrock-runtime client, botocore retries off."""
    session = aioboto3.Session()
    async with session.client(
        "bedrock-runtime",
        region_name=region,
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=client_config(**config),
    ) as client:
        yield client


async def invoke(client: Any, body: str, model_id: str = SONNET) -> tuple[dict[str, Any], dict[str, str]]:
    response = await client.invoke_model(
        modelId=model_id, body=body, contentType="application/json", accept="application/json"
    )
    async with response["body"] as stream:
        data = json.loads(await stream.read())
    return data, response["ResponseMetadata"]["HTTPHeaders"]


@contextmanager
def sync_client(service: str, url: str, region: str = "us-east-1", **config: Any) -> Iterator[Any]:
    """Plain boto3, closed afterwards (filterwarnings=error catches leaked sockets)."""
    client = cast(Any, boto3).client(  # boto3-stubs only type literal service names
        service,
        region_name=region,
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=client_config(**config),
    )
    try:
        yield client
    finally:
        client.close()


def raw_http(
    url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request with http.client, which sends any method, path and body as given."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def admin(url: str, method: str, name: str, payload: Any = None) -> tuple[int, Any]:
    body = None if payload is None else json.dumps(payload).encode()
    status, _, data = raw_http(url, method, f"/_emulator/{name}", body, {"Content-Type": "application/json"})
    return status, json.loads(data)


@pytest.mark.anyio
class TestInvokeWithAioboto3:
    async def test_success_shape_and_headers(self, emu: EmulatorThread) -> None:
        """A valid call answers a Messages body with usage and Bedrock's token headers."""
        async with runtime(emu.url) as client:
            data, headers = await invoke(client, request_body())
        assert data["type"] == "message" and data["role"] == "assistant"
        assert data["model"] == "claude-sonnet-4-5-20250929"
        assert data["id"].startswith("msg_bdrk_")
        assert data["stop_reason"] == "end_turn"
        usage = data["usage"]
        assert usage["input_tokens"] == 3  # "Hello there": 11 characters
        assert 20 <= usage["output_tokens"] <= 60
        assert headers["x-amzn-bedrock-input-token-count"] == "3"
        assert headers["x-amzn-bedrock-output-token-count"] == str(usage["output_tokens"])
        assert int(headers["x-amzn-bedrock-invocation-latency"]) >= 0
        assert headers["x-amzn-requestid"]

    async def test_same_prompt_same_answer(self, emu: EmulatorThread) -> None:
        """Answers are deterministic: the same prompt and seed give the same text."""
        async with runtime(emu.url) as client:
            first, _ = await invoke(client, request_body("Tell me a story"))
            second, _ = await invoke(client, request_body("Tell me a story", temperature=0.1))
            other, _ = await invoke(client, request_body("Tell me another story"))
        assert first["content"] == second["content"]
        assert first["content"] != other["content"]

    @pytest.mark.parametrize(("name", "status"), sorted(ERROR_STATUS.items()))
    async def test_scripted_errors_raise_by_name(self, emu: EmulatorThread, name: str, status: int) -> None:
        """Each Bedrock error is raised by botocore as its own class, with Bedrock's status."""
        emu.script(SONNET, "us-east-1", [{"error": name, "message": f"scripted {name}"}])
        async with runtime(emu.url) as client:
            with pytest.raises(getattr(client.exceptions, name)) as info:
                await invoke(client, request_body())
        error = info.value.response
        assert error["Error"]["Code"] == name
        assert error["Error"]["Message"] == f"scripted {name}"
        assert error["ResponseMetadata"]["HTTPStatusCode"] == status
        assert emu.counters()["requests"][f"{SONNET}@us-east-1"] == {name: 1}

    async def test_script_queue_then_normal(self, emu: EmulatorThread) -> None:
        """'Throttle the next 3 calls, then a 500': the queue plays in order, then calls succeed."""
        emu.script(SONNET, "*", ["ThrottlingException"] * 3 + ["InternalServerException"])
        codes = []
        async with runtime(emu.url) as client:
            for _ in range(5):
                try:
                    await invoke(client, request_body())
                    codes.append("ok")
                except botocore.exceptions.ClientError as exc:
                    codes.append(exc.response["Error"]["Code"])
        assert codes == ["ThrottlingException"] * 3 + ["InternalServerException", "ok"]

    async def test_validation_error_from_the_body(self, emu: EmulatorThread) -> None:
        """A body Bedrock would refuse raises ValidationException with its message."""
        bad = json.dumps(
            {
                "anthropic_version": "bedrock-2023-05-31",
                "max_tokens": 10,
                "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            }
        )
        async with runtime(emu.url) as client:
            with pytest.raises(client.exceptions.ValidationException, match="roles must alternate"):
                await invoke(client, bad)

    async def test_unknown_model_and_missing_geography(self, emu: EmulatorThread) -> None:
        """A model id that does not exist, or a geography the model lacks, is not found."""
        async with runtime(emu.url) as client:
            with pytest.raises(client.exceptions.ResourceNotFoundException, match="was not found"):
                await invoke(client, request_body(), "us.anthropic.claude-imaginary-v1:0")
            with pytest.raises(client.exceptions.ResourceNotFoundException):
                await invoke(client, request_body(), "jp.anthropic.claude-opus-4-5-20251101-v1:0")
        async with runtime(emu.url, region="eu-west-1") as client:
            with pytest.raises(client.exceptions.ResourceNotFoundException, match="eu-west-1"):
                await invoke(client, request_body(), SONNET)

    async def test_region_comes_from_the_signature(self, emu: EmulatorThread) -> None:
        """Counters key routes by profile and the SigV4 region of the client."""
        async with runtime(emu.url, region="us-west-2") as client:
            await invoke(client, request_body())
        assert list(emu.counters()["requests"]) == [f"{SONNET}@us-west-2"]

    async def test_access_denied_for_global(self, emu: EmulatorThread) -> None:
        """A rule can refuse every global. profile while regional ones work."""
        emu.set_faults({"routes": [{"profile": "global.*", "access_denied": True}]})
        async with runtime(emu.url) as client:
            with pytest.raises(client.exceptions.AccessDeniedException, match="not authorized"):
                await invoke(client, request_body(), GLOBAL_SONNET)
            await invoke(client, request_body(), SONNET)

    async def test_outage_window(self, emu: EmulatorThread) -> None:
        """During [start, end) after the faults were set, the route answers ServiceUnavailable."""
        async with runtime(emu.url) as client:
            await invoke(client, request_body(), HAIKU)  # warm the client up: the window is short
            emu.set_faults({"routes": [{"profile": SONNET, "outages": [{"start_s": 0, "end_s": 0.3}]}]})
            with pytest.raises(client.exceptions.ServiceUnavailableException):
                await invoke(client, request_body())
            await invoke(client, request_body(), HAIKU)  # another route is up
            await anyio.sleep(0.35)
            await invoke(client, request_body())

    async def test_error_rate(self, emu: EmulatorThread) -> None:
        """error_rate = 1 answers the configured 5xx on every call."""
        emu.set_faults({"defaults": {"error_rate": 1.0, "error_type": "ServiceUnavailableException"}})
        async with runtime(emu.url) as client:
            with pytest.raises(client.exceptions.ServiceUnavailableException):
                await invoke(client, request_body())

    async def test_throttling_replays_with_the_seed(self, emu: EmulatorThread) -> None:
        """Seeded draws: the same requests meet the same throttles after a reset, in any order."""
        emu.set_faults({"seed": 11, "defaults": {"throttle_rate": 0.5}})

        async def outcomes(order: list[int]) -> dict[int, str]:
            seen: dict[int, str] = {}
            async with runtime(emu.url) as client:
                for i in order:
                    try:
                        await invoke(client, request_body(f"row {i}"))
                        seen[i] = "ok"
                    except client.exceptions.ThrottlingException:
                        seen[i] = "throttled"
            return seen

        first = await outcomes(list(range(16)))
        emu.reset(faults=False)
        second = await outcomes(list(reversed(range(16))))
        assert first == second
        assert set(first.values()) == {"ok", "throttled"}

    async def test_a_retry_gets_a_new_draw(self, emu: EmulatorThread) -> None:
        """The same body sent again is a new attempt: a throttled row gets through eventually."""
        emu.set_faults({"defaults": {"throttle_rate": 0.5}})
        async with runtime(emu.url) as client:
            for _ in range(30):
                try:
                    await invoke(client, request_body("retry me"))
                    break
                except client.exceptions.ThrottlingException:
                    continue
            else:
                pytest.fail("30 throttles in a row at rate 0.5")

    async def test_tpm_burst_throttled_steady_not(self, emu: EmulatorThread) -> None:
        """A burst above the tokens-per-minute quota is throttled while steady traffic below it is not."""
        emu.set_faults(
            {
                "defaults": {"tpm": 2000, "output_tokens": 20},
                "routes": [{"region": "us-west-2", "latency_ms": 1000}],
            }
        )
        async with runtime(emu.url) as client:
            # steady: 40 calls reserving 3 + 50 and settling to 3 + 20 each (Haiku 4.5 burns 1x)
            for i in range(40):
                await invoke(client, request_body(f"steady {i:02d}"[:11], max_tokens=50), HAIKU)
        async with runtime(emu.url, region="us-west-2") as client:
            # burst: 10 concurrent calls reserving 2 + 400 each; only 4 fit in 2,000
            results = await asyncio.gather(
                *(
                    invoke(client, request_body(f"burst {i:02d}"[:11], max_tokens=400), HAIKU)
                    for i in range(10)
                ),
                return_exceptions=True,
            )
        throttled = [r for r in results if isinstance(r, botocore.exceptions.ClientError)]
        assert len(throttled) == 6
        assert all(e.response["Error"]["Code"] == "ThrottlingException" for e in throttled)
        assert all("Too many tokens" in str(e) for e in throttled)
        counters = emu.counters()
        assert counters["requests"][f"{HAIKU}@us-east-1"] == {"ok": 40}
        steady = counters["quota"][f"{HAIKU}@us-east-1"]
        assert (steady["shape"], steady["limit"], steady["used"]) == ("window", 2000, 40 * 23)
        assert counters["throttles"] == {f"{HAIKU}@us-west-2": {"quota": 6, "capacity": 0}}
        assert counters["quota"][f"{HAIKU}@us-west-2"]["used"] == 4 * (2 + 20)  # "burst 00": 2 tokens

    async def test_output_burndown_settles_the_quota(self, emu: EmulatorThread) -> None:
        """Sonnet 4.5's output counts 5x against the quota once the call settles."""
        emu.set_faults({"defaults": {"tpm": 100_000, "output_tokens": 30}})
        async with runtime(emu.url) as client:
            data, _ = await invoke(client, request_body(max_tokens=1000))
        assert data["usage"]["output_tokens"] == 30
        assert emu.counters()["quota"][f"{SONNET}@us-east-1"]["used"] == 3 + 30 * 5

    async def test_peak_in_flight(self, emu: EmulatorThread) -> None:
        """Counters show the highest number of calls in flight at once (a client's concurrency bound)."""
        emu.set_faults({"defaults": {"latency_ms": 500}})
        async with runtime(emu.url) as client:
            await asyncio.gather(*(invoke(client, request_body(f"c{i}")) for i in range(5)))
        counters = emu.counters()
        assert counters["peak_in_flight"] == 5
        assert counters["in_flight"] == 0

    async def test_max_tokens_caps_the_answer(self, emu: EmulatorThread) -> None:
        """An answer that would run past max_tokens stops there with stop_reason max_tokens."""
        emu.set_faults({"defaults": {"output_tokens": 500}})
        async with runtime(emu.url) as client:
            data, headers = await invoke(client, request_body(max_tokens=25))
        assert data["stop_reason"] == "max_tokens"
        assert data["usage"]["output_tokens"] == 25
        assert headers["x-amzn-bedrock-output-token-count"] == "25"

    async def test_stop_sequences(self, emu: EmulatorThread) -> None:
        """A stop sequence found in the answer ends it and is reported."""
        async with runtime(emu.url) as client:
            data, _ = await invoke(client, request_body("stop test"))
            word = data["content"][0]["text"].split()[5]
            cut, _ = await invoke(client, request_body("stop test", stop_sequences=[f" {word}"]))
        assert cut["stop_reason"] == "stop_sequence"
        assert cut["stop_sequence"] == f" {word}"
        assert len(cut["content"][0]["text"]) < len(data["content"][0]["text"])

    async def test_prompt_cache_creation_then_read(self, emu: EmulatorThread) -> None:
        """cache_control: the first call writes the prefix, the next one reads it."""
        system = [{"type": "text", "text": "You are terse. " * 300, "cache_control": {"type": "ephemeral"}}]
        async with runtime(emu.url) as client:
            first, _ = await invoke(client, request_body("Question one", system=system))
            second, _ = await invoke(client, request_body("Question two", system=system))
        assert first["usage"]["cache_creation_input_tokens"] == 1125
        assert first["usage"]["cache_read_input_tokens"] == 0
        assert second["usage"]["cache_read_input_tokens"] == 1125
        assert second["usage"]["cache_creation_input_tokens"] == 0
        tokens = emu.counters()["tokens"][f"{SONNET}@us-east-1"]
        assert tokens["cache_write"] == 1125 and tokens["cache_read"] == 1125

    async def test_long_context_beta(self, emu: EmulatorThread) -> None:
        """Over 200k tokens needs anthropic_beta context-1m on a model that has it."""
        text = "x" * 810_000
        async with runtime(emu.url) as client:
            with pytest.raises(client.exceptions.ValidationException, match="prompt is too long"):
                await invoke(client, request_body(text))
            data, _ = await invoke(client, request_body(text, anthropic_beta=["context-1m-2025-08-07"]))
        assert data["usage"]["input_tokens"] == 202_500

    async def test_pdf_document(self, emu: EmulatorThread) -> None:
        """A base64 PDF is accepted and costs tokens per page."""
        import base64

        pdf = base64.b64encode(b"%PDF-1.4\n<< /Type /Page >>\n<< /Type /Page >>\n%%EOF").decode()
        content = [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": pdf}},
            {"type": "text", "text": "Summarise"},
        ]
        body = json.dumps(
            {
                "anthropic_version": "bedrock-2023-05-31",
                "max_tokens": 50,
                "messages": [{"role": "user", "content": content}],
            }
        )
        async with runtime(emu.url) as client:
            data, _ = await invoke(client, body)
        assert data["usage"]["input_tokens"] == 3_000 + 3

    async def test_latency(self, emu: EmulatorThread) -> None:
        """Fixed latency delays the answer and shows in the invocation-latency header."""
        emu.set_faults({"defaults": {"latency_ms": 150}})
        async with runtime(emu.url) as client:
            started = time.monotonic()
            _, headers = await invoke(client, request_body())
            elapsed = time.monotonic() - started
        assert elapsed >= 0.15
        assert int(headers["x-amzn-bedrock-invocation-latency"]) >= 150

    async def test_cut_off_response(self, emu: EmulatorThread) -> None:
        """A cut-off answer fails the body read (aiohttp's ClientPayloadError) and is not billed."""
        emu.script(SONNET, "*", ["cut_off"])
        async with runtime(emu.url) as client:
            response = await client.invoke_model(
                modelId=SONNET, body=request_body(), contentType="application/json", accept="application/json"
            )
            with pytest.raises(aiohttp.ClientPayloadError):
                async with response["body"] as stream:
                    await stream.read()
            await invoke(client, request_body())  # the client recovers on a new connection
        counters = emu.counters()
        assert counters["requests"][f"{SONNET}@us-east-1"] == {"cut_off": 1, "ok": 1}
        assert counters["billed_requests"] == 1

    async def test_slow_response_times_the_client_out(self, emu: EmulatorThread) -> None:
        """An answer slower than the client's read timeout raises ReadTimeoutError; it is not billed."""
        emu.script(SONNET, "*", [{"slow_ms": 500}])
        async with runtime(emu.url, read_timeout=0.1) as client:
            with pytest.raises(botocore.exceptions.ReadTimeoutError):
                await invoke(client, request_body())
        for _ in range(60):  # the server notices the hang-up when its 500 ms are over
            outcomes = emu.counters()["requests"].get(f"{SONNET}@us-east-1", {})
            if "client_closed" in outcomes:
                break
            await anyio.sleep(0.05)
        assert outcomes == {"client_closed": 1}
        assert emu.counters()["billed_requests"] == 0

    async def test_billed_bodies_are_counted_by_hash(self, emu: EmulatorThread) -> None:
        """Each 200 is billed under the sha256 of its raw body; errors are not billed."""
        body = request_body("pay once")
        emu.script(SONNET, "*", ["ThrottlingException"])
        async with runtime(emu.url) as client:
            with pytest.raises(client.exceptions.ThrottlingException):
                await invoke(client, body)
            await invoke(client, body)
            await invoke(client, body)
        counters = emu.counters()
        assert counters["bodies"] == {hashlib.sha256(body.encode()).hexdigest(): 2}
        assert counters["billed_requests"] == 2
        assert counters["tokens"][f"{SONNET}@us-east-1"]["input"] == 2 * 2

    async def test_control_plane_with_aioboto3(self, emu: EmulatorThread) -> None:
        """The async bedrock client lists models and profiles from the same port."""
        session = aioboto3.Session()
        async with session.client(
            "bedrock",
            region_name="us-east-1",
            endpoint_url=emu.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=client_config(),
        ) as client:
            models = (await client.list_foundation_models(byProvider="anthropic"))["modelSummaries"]
            profiles = (await client.list_inference_profiles(typeEquals="SYSTEM_DEFINED"))[
                "inferenceProfileSummaries"
            ]
        assert len(models) == 10
        assert SONNET in {p["inferenceProfileId"] for p in profiles}

    async def test_serve_in_process(self) -> None:
        """serve() runs an emulator inside the test's own loop, on loopback."""
        async with serve(EmulatorConfig(seed=3)) as emulator, runtime(emulator.url) as client:
            assert emulator.url.startswith("http://127.0.0.1:")
            data, _ = await invoke(client, request_body())
            assert emulator.counters()["billed_requests"] == 1
        assert data["type"] == "message"

    async def test_task_group_start(self) -> None:
        """tg.start(emulator.run) hands back the URL once serving, and cancelling stops it."""
        emulator = Emulator()
        async with anyio.create_task_group() as tg:
            url = await tg.start(emulator.run)
            async with runtime(url) as client:
                await invoke(client, request_body())
            tg.cancel_scope.cancel()
        with pytest.raises(RuntimeError):
            emulator.port  # noqa: B018 - stopped, no port


class TestBoto3:
    def test_invoke_percent_encoded(self, emu: EmulatorThread) -> None:
        """Plain boto3 (which percent-encodes ':' in the path) works the same way."""
        with sync_client("bedrock-runtime", emu.url) as client:
            response = client.invoke_model(
                modelId=SONNET, body=request_body(), contentType="application/json", accept="application/json"
            )
            data = json.loads(response["body"].read())
        assert data["usage"]["input_tokens"] == 3

    def test_error_by_name(self, emu: EmulatorThread) -> None:
        """boto3 raises the modelled class too."""
        emu.script(SONNET, "*", ["ModelTimeoutException"])
        with (
            sync_client("bedrock-runtime", emu.url) as client,
            pytest.raises(client.exceptions.ModelTimeoutException),
        ):
            client.invoke_model(modelId=SONNET, body=request_body(), contentType="application/json")

    def test_cut_off_with_boto3(self, emu: EmulatorThread) -> None:
        """urllib3 reports the short body as botocore's ResponseStreamingError."""
        emu.script(SONNET, "*", ["cut_off"])
        with sync_client("bedrock-runtime", emu.url) as client:
            response = client.invoke_model(
                modelId=SONNET, body=request_body(), contentType="application/json"
            )
            with pytest.raises(botocore.exceptions.ResponseStreamingError):
                response["body"].read()

    def test_list_foundation_models(self, emu: EmulatorThread) -> None:
        """ListFoundationModels answers the catalogue with the real shape."""
        with sync_client("bedrock", emu.url) as client:
            models = client.list_foundation_models(byProvider="anthropic")["modelSummaries"]
            others = client.list_foundation_models(byProvider="meta")["modelSummaries"]
        ids = {m["modelId"] for m in models}
        assert "anthropic.claude-sonnet-4-5-20250929-v1:0" in ids
        assert others == []
        haiku3 = next(m for m in models if m["modelId"] == "anthropic.claude-3-haiku-20240307-v1:0")
        assert haiku3["providerName"] == "Anthropic"
        assert haiku3["modelLifecycle"]["status"] == "ACTIVE"
        assert (
            haiku3["modelArn"]
            == "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0"
        )

    def test_list_inference_profiles_paginates(self, emu: EmulatorThread) -> None:
        """ListInferenceProfiles pages with botocore's paginator and lists what the region may call."""
        with sync_client("bedrock", emu.url, region="eu-central-1") as client:
            pages = client.get_paginator("list_inference_profiles").paginate(
                typeEquals="SYSTEM_DEFINED", PaginationConfig={"PageSize": 4}
            )
            profiles = [p for page in pages for p in page["inferenceProfileSummaries"]]
            one = client.get_inference_profile(
                inferenceProfileIdentifier="eu.anthropic.claude-3-haiku-20240307-v1:0"
            )
        ids = [p["inferenceProfileId"] for p in profiles]
        assert len(ids) == len(set(ids)) > 4
        assert "eu.anthropic.claude-sonnet-4-5-20250929-v1:0" in ids
        assert "global.anthropic.claude-haiku-4-5-20251001-v1:0" in ids
        assert not any(i.startswith(("us.", "apac.", "jp.")) for i in ids)
        assert all(p["type"] == "SYSTEM_DEFINED" and p["status"] == "ACTIVE" for p in profiles)
        assert one["inferenceProfileArn"].endswith(
            ":inference-profile/eu.anthropic.claude-3-haiku-20240307-v1:0"
        )

    def test_create_model_invocation_job_is_counted(self, emu: EmulatorThread) -> None:
        """Batch job creation is accepted, idempotent on clientRequestToken, and counted."""
        with sync_client("bedrock", emu.url) as client:
            args: dict[str, Any] = {
                "jobName": "j",
                "roleArn": "arn:aws:iam::123456789012:role/r",
                "modelId": SONNET,
                "clientRequestToken": "token-1",
                "inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://b/in/"}},
                "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://b/out/"}},
            }
            first = client.create_model_invocation_job(**args)["jobArn"]
            assert client.create_model_invocation_job(**args)["jobArn"] == first
            job = client.get_model_invocation_job(jobIdentifier=first)
        assert job["status"] == "Submitted"
        assert emu.counters()["create_model_invocation_job"] == 2


class TestRobustness:
    def test_raw_colon_and_encoded_colon_are_the_same_route(self, emu: EmulatorThread) -> None:
        """`%3A` and `:` in the model id reach the same route."""
        for path in (f"/model/{SONNET}/invoke", f"/model/{SONNET.replace(':', '%3A')}/invoke"):
            status, _, _ = raw_http(
                emu.url, "POST", path, request_body().encode(), {"Content-Type": "application/json"}
            )
            assert status == 200
        assert emu.counters()["requests"] == {f"{SONNET}@us-east-1": {"ok": 2}}

    def test_arn_model_id(self, emu: EmulatorThread) -> None:
        """An inference-profile ARN (with its encoded '/') names the profile."""
        arn = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{SONNET}"
        with sync_client("bedrock-runtime", emu.url) as client:
            client.invoke_model(modelId=arn, body=request_body(), contentType="application/json")
        assert list(emu.counters()["requests"]) == [f"{SONNET}@us-east-1"]

    @pytest.mark.parametrize(
        ("method", "path", "body", "headers", "status", "error"),
        [
            ("POST", f"/model/{SONNET}/invoke", b"{not json", {}, 400, "ValidationException"),
            ("POST", f"/model/{SONNET}/invoke", b"", {}, 400, "ValidationException"),
            ("POST", f"/model/{SONNET}/invoke", b"[]", {}, 400, "ValidationException"),
            (
                "POST",
                f"/model/{SONNET}/invoke",
                b"{}",
                {"Content-Type": "text/plain"},
                400,
                "ValidationException",
            ),
            ("POST", f"/model/{SONNET}/invoke", b"\xff\xfe", {}, 400, "ValidationException"),
            ("GET", f"/model/{SONNET}/invoke", None, {}, 404, "UnknownOperationException"),
            ("POST", f"/model/{SONNET}/converse", b"{}", {}, 404, "UnknownOperationException"),
            ("GET", "/", None, {}, 404, "UnknownOperationException"),
            ("DELETE", "/foundation-models", None, {}, 404, "UnknownOperationException"),
            ("GET", "/%%%/../etc/passwd", None, {}, 404, "UnknownOperationException"),
            ("POST", "/_emulator/faults", b"{}", {}, 404, "UnknownOperationException"),
            ("PUT", "/_emulator/faults", b"[1]", {}, 400, "ValidationException"),
            ("POST", "/_emulator/script", b"{}", {}, 400, "ValidationException"),
        ],
    )
    def test_bad_requests_get_bedrock_errors(
        self,
        emu: EmulatorThread,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        status: int,
        error: str,
    ) -> None:
        """Malformed bodies, content types and paths are answered in Bedrock's error shape."""
        got_status, got_headers, data = raw_http(emu.url, method, path, body, headers)
        assert got_status == status
        assert got_headers["x-amzn-errortype"].split(":", 1)[0] == error
        assert got_headers["x-amzn-errortype"].endswith(
            ":http://internal.amazon.com/coral/com.amazon.bedrock/"
        )
        assert isinstance(json.loads(data)["message"], str)
        assert emu.counters()["internal_errors"] == 0

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        body=st.one_of(st.binary(max_size=300), st.recursive(st.none() | st.integers() | st.text(), st.lists))
    )
    def test_fuzzed_bodies_never_crash(self, emulator: EmulatorThread, body: Any) -> None:
        """Whatever the body, the answer is a Bedrock-shaped 4xx or a 200, never a crash."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, headers, data = raw_http(emulator.url, "POST", f"/model/{SONNET}/invoke", raw)
        assert status in (200, 400)
        if status == 400:
            assert headers["x-amzn-errortype"].startswith("ValidationException:")
            json.loads(data)
        assert emulator.counters()["internal_errors"] == 0

    def test_binds_loopback_by_default(self) -> None:
        """Nothing outside the machine can reach an emulator started with defaults."""
        with EmulatorThread() as emulator:
            assert emulator.url.startswith("http://127.0.0.1:")
            assert Emulator().host == "127.0.0.1"


class TestAdmin:
    def test_health(self, emu: EmulatorThread) -> None:
        """GET /_emulator/health says ok and where it listens."""
        status, data = admin(emu.url, "GET", "health")
        assert status == 200 and data["status"] == "ok" and data["url"] == emu.url

    def test_faults_put_get_patch(self, emu: EmulatorThread) -> None:
        """PUT replaces, GET returns the same structure, PATCH merges."""
        status, data = admin(emu.url, "PUT", "faults", {"seed": 5, "defaults": {"tpm": 1000}})
        assert status == 200 and data["defaults"]["tpm"] == 1000
        status, data = admin(
            emu.url, "PATCH", "faults", {"routes": [{"profile": "global.*", "access_denied": True}]}
        )
        assert status == 200
        status, data = admin(emu.url, "GET", "faults")
        assert data["seed"] == 5 and data["defaults"]["tpm"] == 1000
        assert data["routes"] == [{"profile": "global.*", "region": "*", "access_denied": True}]
        assert EmulatorConfig.from_dict(data) == emu.config

    def test_bad_faults_name_the_key(self, emu: EmulatorThread) -> None:
        """A refused change says which key is wrong and leaves the faults as they were."""
        status, data = admin(emu.url, "PATCH", "faults", {"defaults": {"throttle_rate": 3}})
        assert status == 400
        assert "defaults.throttle_rate" in data["message"]
        assert emu.config == EmulatorConfig()

    def test_script_and_counters_and_reset(self, emu: EmulatorThread) -> None:
        """Scripts queue per route, counters report outcomes, reset clears everything."""
        status, data = admin(
            emu.url,
            "POST",
            "script",
            {"profile": SONNET, "region": "us-east-1", "outcomes": ["ThrottlingException"]},
        )
        assert (status, data["queued"]) == (200, 1)
        assert admin(emu.url, "GET", "script")[1] == {"pending": {f"{SONNET}@us-east-1": 1}}
        status, _, _ = raw_http(emu.url, "POST", f"/model/{SONNET}/invoke", request_body().encode())
        assert status == 429
        _, counters = admin(emu.url, "GET", "counters")
        assert counters["requests"] == {f"{SONNET}@us-east-1": {"ThrottlingException": 1}}
        assert admin(emu.url, "POST", "reset")[0] == 200
        _, counters = admin(emu.url, "GET", "counters")
        assert counters["requests"] == {} and counters["billed_requests"] == 0

    def test_reset_can_keep_faults(self, emu: EmulatorThread) -> None:
        """reset with faults=false clears counters but keeps the scenario."""
        emu.set_faults({"defaults": {"throttle_rate": 0.25}})
        admin(emu.url, "POST", "reset", {"faults": False})
        assert emu.config.defaults.throttle_rate == 0.25

    def test_bad_script_is_refused_whole(self, emu: EmulatorThread) -> None:
        """One bad outcome refuses the whole list, so a scenario is never half queued."""
        status, data = admin(emu.url, "POST", "script", {"profile": SONNET, "outcomes": ["ok", "Nope"]})
        assert status == 400 and "outcomes[1]" in data["message"]
        assert admin(emu.url, "GET", "script")[1] == {"pending": {}}


class TestCommandLine:
    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "runner.emulator", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def test_serves_until_sigterm(self, tmp_path: Path) -> None:
        """The process prints its URL when ready, answers boto3, and exits 0 on SIGTERM."""
        ready = tmp_path / "url"
        with self.start("--seed", "5", "--deny-global", "--ready-file", str(ready)) as process:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            assert line.startswith(READY_PREFIX + "http://127.0.0.1:")
            url = line[len(READY_PREFIX) :]
            assert ready.read_text().strip() == url
            with sync_client("bedrock-runtime", url) as client:
                response = client.invoke_model(
                    modelId=SONNET, body=request_body(), contentType="application/json"
                )
                assert json.loads(response["body"].read())["type"] == "message"
                with pytest.raises(client.exceptions.AccessDeniedException):
                    client.invoke_model(
                        modelId=GLOBAL_SONNET, body=request_body(), contentType="application/json"
                    )
            process.send_signal(signal.SIGTERM)
            assert process.wait(10) == 0
            assert process.stdout.read() == ""
            assert process.stderr is not None and "emulator.stopped" in process.stderr.read()

    def test_bad_fault_file_exits_2(self, tmp_path: Path) -> None:
        """A fault file with a wrong key stops before serving, naming the key."""
        faults = tmp_path / "faults.toml"
        faults.write_text("[defaults]\nthrottle_rate = 7\n")
        with self.start("--faults", str(faults)) as process:
            _, err = process.communicate(timeout=20)
        assert process.returncode == 2
        assert "defaults.throttle_rate" in err

    def test_help(self, capsys: pytest.CaptureFixture[str]) -> None:
        """main() is the click command; --help lists the fault flags."""
        assert main(["--help"]) == 0
        assert "--tpm" in capsys.readouterr().out


class TestLifecycle:
    def test_stop_with_an_answer_in_flight(self) -> None:
        """Stopping does not wait for a slow answer: the client sees the connection end, stop returns fast."""
        emulator = EmulatorThread().start()
        emulator.script(SONNET, "*", [{"slow_ms": 30_000}])
        errors: list[BaseException] = []

        def call() -> None:
            try:
                raw_http(emulator.url, "POST", f"/model/{SONNET}/invoke", request_body().encode())
            except (OSError, http.client.HTTPException) as exc:
                errors.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        for _ in range(100):
            if emulator.counters()["in_flight"]:
                break
            time.sleep(0.01)
        started = time.monotonic()
        emulator.stop()
        caller.join(5)
        assert time.monotonic() - started < 3
        assert not caller.is_alive()
        assert len(errors) == 1
