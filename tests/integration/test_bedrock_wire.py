"""What the job's own aioboto3 client puts on the wire, read by a plain HTTP server on loopback."""

from __future__ import annotations

import pytest
from aiohttp import web

from runner.bedrock import USER_AGENT, AioBotoTransport
from runner.errors import InvocationError
from runner.types import Route

ROUTE = Route("global.anthropic.claude-haiku-4-5-20251001-v1:0", "us-east-1", "global")


@pytest.mark.anyio
async def test_every_request_names_the_tool_in_its_user_agent() -> None:
    # The User-Agent is fixed once per process (botocore's own costs a fifth of a call's CPU): it
    # must still say who is calling, on every request, retries included.
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.headers.get("User-Agent", ""))
        return web.Response(status=418, text="not Bedrock")

    app = web.Application()
    app.router.add_post("/model/{model_id}/invoke", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with AioBotoTransport.open(
            ["us-east-1"], endpoint_url=f"http://127.0.0.1:{port}", max_in_flight=2, timeout_s=5
        ) as transport:
            for _ in range(2):
                with pytest.raises(InvocationError):
                    await transport.invoke(ROUTE, b'{"messages": []}')
    finally:
        await runner.cleanup()
    assert len(seen) == 2
    assert all(agent.startswith(USER_AGENT) for agent in seen), seen  # aioboto3 appends its session's
    assert USER_AGENT.startswith("bedrock-batch/")
