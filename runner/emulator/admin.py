"""The admin API under ``/_emulator/``: how tests and benchmarks script a scenario while it runs.

JSON in, JSON out, on the emulator's own port and event loop (so a change applies to the very next
request). Errors use Bedrock's shape (``x-amzn-ErrorType: ValidationException``, ``{"message"}``) so
one client helper reads both. Documented with curl examples in ``docs/emulator.md``.

==========================  ==========================================================================
``GET  /_emulator/health``  ``{"status": "ok", "url", "uptime_s"}``
``GET  /_emulator/counters``requests per route and outcome, throttles, tokens, quota timelines, bodies
``POST /_emulator/reset``   fresh start; ``{"faults": false}`` keeps the current faults
``GET  /_emulator/faults``  the fault configuration (same structure as the TOML file)
``PUT  /_emulator/faults``  replace it
``PATCH /_emulator/faults`` merge into it (defaults key by key, routes by profile + region)
``POST /_emulator/script``  ``{"profile", "region", "outcomes": [...]}``: what the next calls answer
``GET  /_emulator/script``  pending scripted outcomes per route; ``DELETE`` drops them all
==========================  ==========================================================================
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from runner.emulator.config import ConfigError
from runner.emulator.errors import BedrockError, validation

if TYPE_CHECKING:
    from runner.emulator.server import Emulator


async def read_json(request: web.BaseRequest, *, default: Any = None) -> Any:
    """The request's JSON body; an empty body gives ``default`` when one is allowed."""
    raw = await request.read()
    if not raw.strip():
        if default is not None:
            return default
        raise validation("A JSON object body is required.")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise validation(f"The body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise validation("The body must be a JSON object.")
    return data


async def handle(emulator: Emulator, request: web.BaseRequest, path: str) -> web.StreamResponse:
    """Dispatch one admin call; configuration mistakes become 400 ValidationExceptions."""
    try:
        return await _dispatch(emulator, request, path[len("/_emulator/") :].rstrip("/"), request.method)
    except ConfigError as exc:
        raise validation(str(exc)) from exc


async def _dispatch(
    emulator: Emulator, request: web.BaseRequest, name: str, method: str
) -> web.StreamResponse:
    if name == "health" and method == "GET":
        return emulator.json_response(
            {
                "status": "ok",
                "url": emulator.url,
                "uptime_s": round(time.monotonic() - emulator.started_at, 3),
            }
        )
    if name == "counters" and method == "GET":
        return emulator.json_response(emulator.counters())
    if name == "reset" and method == "POST":
        data = await read_json(request, default={})
        faults = data.get("faults", True)
        if not isinstance(faults, bool):
            raise validation("reset: `faults` must be true or false")
        emulator.reset(faults=faults)
        return emulator.json_response({"reset": True, "faults": emulator.config.to_dict()})
    if name == "faults":
        if method == "GET":
            return emulator.json_response(emulator.config.to_dict())
        if method in ("PUT", "PATCH"):
            data = await read_json(request)
            config = emulator.set_faults(data, merge=method == "PATCH")
            return emulator.json_response(config.to_dict())
    if name == "script":
        if method == "POST":
            data = await read_json(request)
            profile, region = data.get("profile"), data.get("region", "*")
            if not isinstance(profile, str) or not profile:
                raise validation("script: `profile` (the model id as the client sends it) is required")
            if not isinstance(region, str) or not region:
                raise validation("script: `region` must be a region name or '*'")
            queued = emulator.script(profile, region, data.get("outcomes"))
            return emulator.json_response({"route": f"{profile}@{region}", "queued": queued})
        if method == "GET":
            return emulator.json_response({"pending": emulator.scripts()})
        if method == "DELETE":
            emulator.clear_scripts()
            return emulator.json_response({"pending": {}})
    raise BedrockError("UnknownOperationException", f"No admin operation matches {method} /_emulator/{name}.")
