"""The emulator's HTTP server: Bedrock's runtime and control plane, plus the admin API, on one port.

Built on aiohttp's low-level ``web.Server`` (no router, no middleware, no access log) with a
hand-written dispatch on the raw path: the router would decode ``%2F`` inside ARNs before matching,
and the hot path is cheaper without it. State lives on the one event loop that runs the server;
nothing here is thread-safe, :class:`~runner.emulator.thread.EmulatorThread` marshals calls onto it.

What one InvokeModel goes through, in order (so a scenario reads predictably):

1. a scripted outcome queued for the route (``POST /_emulator/script``) replaces every random fault
   (a scripted ``body`` answers 200 with that JSON once the request body has passed validation);
2. the route itself: unknown model id, missing geography, ``access_denied``, an outage window;
3. the body: content type, JSON, Bedrock's validation (:mod:`runner.emulator.wire`);
4. seeded draws: ``throttle_rate`` (429 "Too many requests": a capacity throttle), ``error_rate`` (5xx);
5. the tokens-per-minute quota (:mod:`runner.emulator.quota`, window, bucket or fixed): reserve
   ``input + cache_write + max_tokens`` or answer 429 "Too many tokens" (a quota throttle);
6. the wait: latency + per-output-token time, or ``slow_ms`` for a slow answer;
7. the answer, whole or cut off; the quota settles to the real usage; a whole 200 is billed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote

import anyio
from aiohttp import web
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from runner.catalog import app_profile
from runner.emulator import admin, control
from runner.emulator.batch import BatchJobs
from runner.emulator.cache import NO_CACHE, PromptCache
from runner.emulator.config import EmulatorConfig, ScriptedOutcome, parse_outcomes
from runner.emulator.errors import TOKENS_THROTTLED_MESSAGE, BedrockError, validation
from runner.emulator.quota import reservation_tokens, settled_tokens
from runner.emulator.routes import RouteState, not_found, outage_error, prompt_uniform, uniforms
from runner.emulator.wire import _stream, error_body, parse_invoke, render_answer

log = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"
"""The region of a request without a SigV4 ``Authorization`` header (curl)."""

MAX_BODY_BYTES = 64 * 1024 * 1024
"""Larger bodies are answered ``ValidationException`` (aiohttp's 1 MB default would turn PDFs into 413s)."""

SHUTDOWN_GRACE_S = 0.5

_JSON = "application/json"
_ACCEPTED_CONTENT_TYPES = frozenset({"", _JSON, "application/*", "*/*"})


def region_of(authorization: str | None) -> str:
    """The region of a SigV4 credential scope: ``Credential=AKID/20260101/us-east-1/bedrock/aws4_request``."""
    if authorization:
        at = authorization.find("Credential=")
        if at != -1:
            parts = authorization[at + 11 :].split("/", 4)
            if len(parts) >= 4 and parts[2]:
                return parts[2]
    return DEFAULT_REGION


def format_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Emulator:
    """A running (or startable) emulated Bedrock endpoint.

    Use ``async with serve(config) as emu`` (or ``async with Emulator(config)``), or ``await tg.start(
    emu.run)`` inside a task group; ``emu.url`` is then the ``endpoint_url`` for boto clients. The state
    methods (:meth:`counters`, :meth:`set_faults`, :meth:`script`, :meth:`reset`) must be called on the
    emulator's own event loop, which is what the admin endpoints and ``EmulatorThread`` do.
    """

    def __init__(
        self, config: EmulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._initial = config if config is not None else EmulatorConfig()
        self._config = self._initial
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._runner: web.ServerRunner | None = None
        self._sleepers: set[asyncio.Task[Any]] = set()
        self._counter = 0
        self._messages = 0
        self._in_flight = 0
        self._rid_base = hashlib.sha256(str(self._initial.seed).encode()).hexdigest()[:20]
        self._rid_base = (
            f"{self._rid_base[:8]}-{self._rid_base[8:12]}-4{self._rid_base[13:16]}-{self._rid_base[16:20]}"
        )
        self._clear_state()

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the emulator is not running")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the ``endpoint_url`` of both the runtime and the control plane."""
        return format_url(self.host, self.port)

    @property
    def config(self) -> EmulatorConfig:
        return self._config

    @property
    def started_at(self) -> float:
        """``time.monotonic()`` at start (or the last reset): the origin of ``since = "start"`` outages."""
        return self._t_start

    async def start(self) -> None:
        """Bind and serve; returns once the socket accepts connections."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        server = web.Server(
            self._handle,
            request_factory=self._make_request,
            access_log=None,
            keepalive_timeout=75.0,
        )
        _stream()  # build the answer text once, not in the first request
        runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_GRACE_S)
        await runner.setup()
        site = web.SockSite(runner, sock, backlog=1024)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
        self._runner = runner
        self._port = sock.getsockname()[1]
        self._reset_clock()

    async def aclose(self) -> None:
        """Stop serving: sleeping answers are cancelled, open connections closed."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._port = None
        for task in list(self._sleepers):
            task.cancel()
        self._batch.close()
        await runner.cleanup()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def run(self, *, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; for ``url = await tg.start(emu.run)``."""
        await self.start()
        try:
            task_status.started(self.url)
            await asyncio.Event().wait()
        finally:
            with anyio.CancelScope(shield=True):
                await self.aclose()

    def _make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: Any,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        return web.BaseRequest(
            message,
            payload,
            protocol,
            writer,
            task,
            asyncio.get_running_loop(),
            client_max_size=MAX_BODY_BYTES,
        )

    # --- state -----------------------------------------------------------------------------------

    def _clear_state(self) -> None:
        self._routes: dict[tuple[str, str], RouteState] = {}
        self._scripts: dict[tuple[str, str], deque[ScriptedOutcome]] = {}
        self._bodies: dict[bytes, int] = {}
        self._seen: dict[bytes, int] = {}
        self._billed = 0
        self._requests = 0
        self._peak_in_flight = 0
        self._internal_errors = 0
        old: BatchJobs | None = getattr(self, "_batch", None)
        if old is not None:
            old.close()  # reset: jobs still running are cancelled, as on a fresh start
        self._batch = BatchJobs(lambda: self._config)
        self._job_creates = 0
        self._invocation_logging: dict[str, dict[str, Any]] = {}
        self._cache = PromptCache(ttl_s=self._config.cache_ttl_s, min_tokens=self._config.cache_min_tokens)
        self._reset_clock()

    def _reset_clock(self) -> None:
        self._t_start = self._t_set = time.monotonic()

    def reset(self, *, faults: bool = True) -> None:
        """Back to a fresh start: counters, quotas, cache, scripts, clock, and (unless told not) faults."""
        if faults:
            self._config = self._initial
        self._clear_state()

    def set_faults(self, data: Mapping[str, Any] | EmulatorConfig, *, merge: bool = False) -> EmulatorConfig:
        """Replace (``PUT``) or patch (``PATCH``) the faults; outages with ``since = "set"`` restart now."""
        if isinstance(data, EmulatorConfig):
            config = data
        elif merge:
            config = self._config.merged(data)
        else:
            config = EmulatorConfig.from_dict(data)
        self._config = config
        now = self._t_set = time.monotonic()
        self._cache.ttl_s, self._cache.min_tokens = config.cache_ttl_s, config.cache_min_tokens
        for (profile, region), route in self._routes.items():
            route.apply(config.settings_for(profile, region), seed=config.seed, now=now)
        return config

    def script(self, profile: str, region: str, outcomes: list[Any]) -> int:
        """Queue what the next calls of a route answer (``region="*"``: any region); returns queue length."""
        parsed = parse_outcomes(outcomes)
        queue = self._scripts.setdefault((profile, region), deque())
        queue.extend(parsed)
        return len(queue)

    def scripts(self) -> dict[str, int]:
        return {f"{p}@{r}": len(q) for (p, r), q in self._scripts.items() if q}

    def clear_scripts(self) -> None:
        self._scripts.clear()

    def counters(self) -> dict[str, Any]:
        """The documented counters JSON (see ``docs/emulator.md``)."""
        now = time.monotonic()
        return {
            "requests": {r.name: dict(r.outcomes) for r in self._routes.values() if r.outcomes},
            "tokens": {
                r.name: {
                    "input": r.input_tokens,
                    "output": r.output_tokens,
                    "cache_read": r.cache_read,
                    "cache_write": r.cache_write,
                }
                for r in self._routes.values()
                if r.outcomes.get("ok")
            },
            "throttles": {
                r.name: {"quota": r.quota_throttles, "capacity": r.capacity_throttles}
                for r in self._routes.values()
                if r.quota_throttles or r.capacity_throttles
            },
            "quota": {
                r.name: r.quota.snapshot(now).to_dict() for r in self._routes.values() if r.quota is not None
            },
            "bodies": {digest.hex(): n for digest, n in self._bodies.items()},
            "billed_requests": self._billed,
            "total_requests": self._requests,
            "in_flight": self._in_flight,
            "peak_in_flight": self._peak_in_flight,
            "internal_errors": self._internal_errors,
            "create_model_invocation_job": self._job_creates,
            "batch": self._batch.counters(),
        }

    def _route(self, profile: str, region: str, now: float) -> RouteState:
        route = self._routes.get((profile, region))
        if route is None:
            config = self._config
            settings = config.settings_for(profile, region)
            route = RouteState(profile, region, settings, seed=config.seed, now=now)
            self._routes[(profile, region)] = route
        return route

    def _pop_script(self, profile: str, region: str) -> ScriptedOutcome | None:
        for key in ((profile, region), (profile, "*")):
            queue = self._scripts.get(key)
            if queue:
                outcome = queue.popleft()
                if not queue:
                    del self._scripts[key]
                return outcome
        return None

    # --- HTTP ------------------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path, _, _ = request.raw_path.partition("?")
        self._requests += 1
        if "Expect" in request.headers:  # the low-level server leaves 100-continue to us (curl, big bodies)
            await self._expect(request)
        try:
            if path.startswith("/model/"):
                if path.endswith("/invoke") and request.method == "POST":
                    return await self._invoke(request, path)
                return await self._model_path(request, path)
            if path.startswith("/_emulator/"):
                return await admin.handle(self, request, path)
            return await self._control(request, path)
        except BedrockError as exc:
            return self.error_response(exc)
        except Exception:  # the server must never crash: a bug here is a 500, counted and logged
            self._internal_errors += 1
            log.exception("emulator.internal_error path=%s", path)
            return self.error_response(BedrockError("InternalServerException"))

    async def _expect(self, request: web.BaseRequest) -> None:
        if request.headers["Expect"].lower() == "100-continue" and request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0

    def _request_id(self) -> str:
        self._counter += 1
        return f"{self._rid_base}-{self._counter:012x}"

    def error_response(self, exc: BedrockError) -> web.Response:
        return web.Response(
            status=exc.status,
            body=error_body(exc.message),
            headers={
                "Content-Type": _JSON,
                "x-amzn-requestid": self._request_id(),
                "x-amzn-ErrorType": exc.kind.header,
            },
        )

    async def _sleep(self, seconds: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sleepers.add(task)
        try:
            await asyncio.sleep(seconds)
        finally:
            self._sleepers.discard(task)

    async def _invoke(self, request: web.BaseRequest, path: str) -> web.StreamResponse:
        started = time.monotonic()
        profile = unquote(path[7:-7])
        if profile.startswith("arn:") and app_profile(profile) is None:
            profile = profile.rsplit("/", 1)[-1]  # a system profile's or a model's ARN: its id
        route = self._route(profile, region_of(request.headers.get("Authorization")), started)
        scripted = self._pop_script(profile, route.region) if self._scripts else None
        self._in_flight += 1
        if self._in_flight > self._peak_in_flight:
            self._peak_in_flight = self._in_flight
        try:
            return await self._invoke_route(request, route, scripted, started)
        except BedrockError as exc:
            route.count(exc.name)
            return self.error_response(exc)
        finally:
            self._in_flight -= 1

    async def _invoke_route(
        self,
        request: web.BaseRequest,
        route: RouteState,
        scripted: ScriptedOutcome | None,
        started: float,
    ) -> web.StreamResponse:
        if scripted is not None and scripted.error is not None:
            raise BedrockError(scripted.error, scripted.message)
        model = route.model
        if route.error is not None or model is None:
            raise route.error or not_found("The model was not found.")
        settings = route.settings
        if settings.access_denied:
            raise route.access_denied()
        if settings.outages:
            name = outage_error(
                settings.outages, since_start=started - self._t_start, since_set=started - self._t_set
            )
            if name is not None:
                raise BedrockError(name)

        content_type = request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if content_type not in _ACCEPTED_CONTENT_TYPES:
            raise validation(
                f"The provided content type {content_type!r} is not supported; use application/json."
            )
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise validation("Input is too long for requested model.") from exc
        body_digest = hashlib.sha256(raw).digest()
        seen = self._seen.get(body_digest, 0)
        self._seen[body_digest] = seen + 1
        config = self._config
        invoke = parse_invoke(raw, model)
        if scripted is not None and scripted.kind == "body":
            # A whole 200 that is not a Messages response (a broken proxy, a stand-in): not billed.
            route.count("not_messages")
            return web.Response(
                body=json.dumps(scripted.body).encode(),
                headers={"Content-Type": _JSON, "x-amzn-requestid": self._request_id()},
            )

        draws = None
        if scripted is None and (settings.random_faults or not settings.latency.is_zero):
            draws = uniforms(hashlib.sha256(route.fault_key + body_digest + seen.to_bytes(8, "big")).digest())
            if draws[0] <= settings.throttle_rate:  # capacity, whatever the quota: the plain message
                route.capacity_throttles += 1
                if route.quota is not None:
                    route.quota.capacity_throttled(started)
                raise BedrockError("ThrottlingException")
            if draws[1] <= settings.error_rate:
                raise BedrockError(settings.error_type)
        cache = (
            self._cache.lookup(model.base_id, invoke.cache_points, started)
            if invoke.cache_points
            else NO_CACHE
        )
        if scripted is not None and scripted.output_tokens is not None:
            output_tokens = scripted.output_tokens
        else:
            output_tokens = settings.output_tokens.pick(prompt_uniform(invoke.prompt_key, config.seed))

        reservation = None
        quota = route.quota
        if quota is not None and scripted is None:
            reserve = reservation_tokens(
                invoke.input_tokens - cache.read - cache.write, cache.write, invoke.max_tokens
            )
            reservation = quota.try_reserve(reserve, started)
            if reservation is None:
                route.quota_throttles += 1
                raise BedrockError("ThrottlingException", TOKENS_THROTTLED_MESSAGE)

        self._messages += 1
        answer = render_answer(
            invoke,
            model,
            seed=config.seed,
            output_tokens=output_tokens,
            cache_read=cache.read,
            cache_write=cache.write,
            message_id=f"msg_bdrk_01{body_digest.hex()[:14]}{self._messages & 0xFFFFFFFF:08x}",
        )

        cut_off = slow = False
        if scripted is not None:
            cut_off = scripted.kind == "cut_off"
            slow = scripted.kind == "slow"
            if slow:
                delay_ms = scripted.slow_ms if scripted.slow_ms is not None else settings.slow_ms
            elif scripted.latency_ms is not None:
                delay_ms = scripted.latency_ms
            else:
                delay_ms = 0.0
        elif draws is not None:
            slow = draws[3] <= settings.slow_rate
            cut_off = not slow and draws[2] <= settings.cut_off_rate
            if slow:
                delay_ms = settings.slow_ms
            else:
                delay_ms = settings.latency.sample(draws[4], draws[5])
                delay_ms += settings.per_output_token_ms * answer.output_tokens
        else:
            delay_ms = settings.per_output_token_ms * answer.output_tokens
        if delay_ms > 0:
            await self._sleep(delay_ms / 1000.0)
        if invoke.cache_points:
            self._cache.store(model.base_id, invoke.cache_points, time.monotonic())
        if reservation is not None and quota is not None:
            cost = settled_tokens(
                answer.input_tokens, answer.cache_write, answer.output_tokens, route.burndown
            )
            quota.settle(reservation, cost, time.monotonic())

        transport = request.transport
        if transport is None or transport.is_closing():
            route.count("client_closed")
            return web.Response(status=499)

        latency_ms = int((time.monotonic() - started) * 1000)
        headers = {
            "Content-Type": _JSON,
            "x-amzn-requestid": self._request_id(),
            "x-amzn-bedrock-invocation-latency": str(latency_ms),
            "x-amzn-bedrock-output-token-count": str(answer.output_tokens),
            "x-amzn-bedrock-input-token-count": str(answer.input_tokens),
        }
        if answer.cache_read or answer.cache_write:
            headers["x-amzn-bedrock-cache-read-input-token-count"] = str(answer.cache_read)
            headers["x-amzn-bedrock-cache-write-input-token-count"] = str(answer.cache_write)
        if cut_off:
            route.count("cut_off")
            return await self._cut_off(request, answer.body, headers)

        route.count("ok")
        route.input_tokens += answer.input_tokens
        route.output_tokens += answer.output_tokens
        route.cache_read += answer.cache_read
        route.cache_write += answer.cache_write
        self._bodies[body_digest] = self._bodies.get(body_digest, 0) + 1
        self._billed += 1
        return web.Response(body=answer.body, headers=headers)

    async def _cut_off(
        self, request: web.BaseRequest, body: bytes, headers: dict[str, str]
    ) -> web.StreamResponse:
        """Send the headers with the full Content-Length, half the body, then drop the connection."""
        response = web.StreamResponse(headers=headers)
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        transport = request.transport
        if transport is not None:
            transport.close()  # flushes what was written, then closes: the client sees a short body
        return response

    async def _model_path(self, request: web.BaseRequest, path: str) -> web.StreamResponse:
        """Operations under ``/model/`` other than InvokeModel: named, but not emulated."""
        operation = path.rsplit("/", 1)[-1]
        raise BedrockError(
            "UnknownOperationException",
            f"The Bedrock emulator does not implement {request.method} /model/{{modelId}}/{operation}.",
        )

    async def _control(self, request: web.BaseRequest, path: str) -> web.StreamResponse:
        """The control plane (``bedrock`` client) on the same port."""
        region = region_of(request.headers.get("Authorization"))
        query = request.query
        method = request.method
        if method == "GET" and path == "/foundation-models":
            return self.json_response(control.list_foundation_models(region, query))
        if method == "GET" and path.startswith("/foundation-models/"):
            return self.json_response(control.get_foundation_model(region, unquote(path[19:])))
        if method == "GET" and path == "/inference-profiles":
            return self.json_response(control.list_inference_profiles(region, query))
        if method == "GET" and path.startswith("/inference-profiles/"):
            return self.json_response(control.get_inference_profile(region, unquote(path[20:])))
        if path == "/logging/modelinvocations":
            return await self._logging(request, region)
        if path == "/model-invocation-job" and method == "POST":
            self._job_creates += 1  # every call, retries included: what a paid-twice test counts
            return self.json_response(self._batch.create(region, await admin.read_json(request)))
        if path == "/model-invocation-jobs" and method == "GET":
            return self.json_response(self._batch.list(query))
        if path.startswith("/model-invocation-job/"):
            ident = unquote(path[22:])
            if method == "GET":
                return self.json_response(self._batch.get(ident))
            if method == "POST" and ident.endswith("/stop"):
                return self.json_response(self._batch.stop(ident[:-5]))
        raise BedrockError("UnknownOperationException", f"No operation matches {method} {path}.")

    async def _logging(self, request: web.BaseRequest, region: str) -> web.Response:
        """Get/Put/DeleteModelInvocationLoggingConfiguration: one setting per region, off at start."""
        if request.method == "GET":
            config = self._invocation_logging.get(region)
            return self.json_response({} if config is None else {"loggingConfig": config})
        if request.method == "PUT":
            data = await admin.read_json(request)
            config = data.get("loggingConfig") if isinstance(data, dict) else None
            if not isinstance(config, dict):
                raise validation(
                    "1 validation error detected: Value null at 'loggingConfig' failed to satisfy "
                    "constraint: Member must not be null"
                )
            if not (config.get("s3Config") or config.get("cloudWatchConfig")):
                raise validation("At least one of s3Config or cloudWatchConfig must be provided.")
            self._invocation_logging[region] = config
            return self.json_response({})
        if request.method == "DELETE":
            self._invocation_logging.pop(region, None)
            return self.json_response({})
        raise BedrockError(
            "UnknownOperationException", f"No operation matches {request.method} /logging/modelinvocations."
        )

    def json_response(self, data: Any, status: int = 200) -> web.Response:
        return web.json_response(data, status=status, headers={"x-amzn-requestid": self._request_id()})


@asynccontextmanager
async def serve(
    config: EmulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[Emulator]:
    """A running emulator for the duration of the block (asyncio; anyio's asyncio backend works too)."""
    emulator = Emulator(config, host=host, port=port)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.aclose()
