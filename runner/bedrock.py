"""The only module that talks to Bedrock, through one seam per system it calls [httpx's transports]::

    Transport      InvokeModel (bedrock-runtime)           AioBotoTransport      <- the pool
    ControlPlane   batch inference jobs (bedrock)          AioBotoControlPlane   <- the batch lane
                   GetModelInvocationLoggingConfiguration  AioBotoControlPlane   <- preflight
                   ListFoundationModels, ListInferenceProfiles,
                   GetModelInvocationLoggingConfiguration: control_client()      <- ``models``

One aioboto3 client per region for the whole job (building one is costly, so never one per request),
botocore's own retries off (tenacity in ``pool`` is the only retry layer, or every failure would be
retried twice over), a connection pool as large as the job's concurrency, every botocore or aiohttp
failure translated into the ``errors`` tree in one place (:func:`map_botocore_errors`), and one rule
for credentials (:func:`placeholder_credentials`). The emulator path and the real-AWS path are the
same code; only ``endpoint_url`` differs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import platform
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Protocol

import botocore.exceptions
from botocore.config import Config

from runner import __version__
from runner.answer import NotAMessageError, read_message

if TYPE_CHECKING:  # aioboto3 (and aiohttp under it) load when a client is opened: `models` needs neither
    import aioboto3

from runner.errors import (
    AccessDeniedError,
    AwsSetupError,
    BatchError,
    BatchJobError,
    EndpointUnavailableError,
    EndpointUnreachableError,
    InvocationError,
    MalformedResponseError,
    ModelError,
    ModelNotReadyError,
    ModelTimeoutError,
    ModelValidationError,
    PermanentError,
    PreflightError,
    QuotaExceededError,
    RouteNotFoundError,
    ThrottledError,
)
from runner.types import Completion, Route

_ERRORS: dict[str, type[InvocationError]] = {
    "ThrottlingException": ThrottledError,
    "ModelNotReadyException": ModelNotReadyError,
    "TooManyRequestsException": ThrottledError,
    "ServiceUnavailableException": EndpointUnavailableError,
    "InternalServerException": EndpointUnavailableError,
    "ModelTimeoutException": ModelTimeoutError,
    "ModelErrorException": ModelError,
    "ValidationException": ModelValidationError,
    "AccessDeniedException": AccessDeniedError,
    "UnrecognizedClientException": AccessDeniedError,
    "ResourceNotFoundException": RouteNotFoundError,
    "ServiceQuotaExceededException": QuotaExceededError,
}


class Transport(Protocol):
    """What the pool needs from Bedrock: one call, one answer or one error from ``runner.errors``.

    The transport keeps the call's deadline (the job's ``[retry] timeout_s``) and answers a call past
    it with ``ModelTimeoutError``: the pool sets no timer of its own per call.
    """

    async def invoke(self, route: Route, body: bytes) -> Completion: ...


@contextlib.contextmanager
def map_botocore_errors(
    route: Route, *, timeout_s: float | None = None, endpoint: str | None = None
) -> Iterator[None]:
    """Translate botocore/aiohttp failures into the most specific ``InvocationError``.

    ``timeout_s``: the client's read timeout, named in the message of a call that ran past it.
    ``endpoint``: the URL the client calls, named when it cannot be reached.

    Messages carry Bedrock's own message (which never echoes the prompt) and never the payload. An
    answer without Bedrock's headers (``x-amzn-RequestId``, ``x-amzn-ErrorType``) is not Bedrock's,
    whatever its status: :class:`EndpointUnreachableError`, never a verdict on the row.
    """
    where = endpoint or f"Bedrock in {route.region}"
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        err = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        code = str(err.get("Code") or "")
        status = int(meta.get("HTTPStatusCode") or 0)
        cls = _ERRORS.get(code)
        if cls is None and not is_bedrock_answer(meta.get("HTTPHeaders") or {}):
            cause = f"answered HTTP {status} without Bedrock's headers (not a Bedrock endpoint)"
            raise EndpointUnreachableError(
                f"{where}: {cause}", endpoint=where, cause=cause, status=status or None, route=route.name
            ) from exc
        if cls is None:
            cls = EndpointUnavailableError if status >= 500 or status == 0 else PermanentError
        message = str(err.get("Message") or code or f"HTTP {status}")
        raise cls(
            f"{route.model_id} in {route.region}: {message}",
            code=code or None,
            status=status or None,
            request_id=meta.get("RequestId"),
            route=route.name,
        ) from exc
    except botocore.exceptions.ConnectTimeoutError as exc:
        cause = "timed out connecting"
        raise EndpointUnreachableError(
            f"{where}: {cause}", endpoint=where, cause=cause, route=route.name
        ) from exc
    except (botocore.exceptions.ReadTimeoutError, TimeoutError) as exc:
        within = f"within {timeout_s:g} s" if timeout_s is not None else "in time"
        raise ModelTimeoutError(
            f"{route.model_id} in {route.region}: no answer {within}", route=route.name
        ) from exc
    except botocore.exceptions.ConnectionError as exc:  # refused, DNS, TLS, a proxy
        cause = network_cause(exc)
        raise EndpointUnreachableError(
            f"{where}: {cause}", endpoint=where, cause=cause, route=route.name
        ) from exc
    except _connection_errors() as exc:
        raise EndpointUnavailableError(
            f"{route.model_id} in {route.region}: connection failed ({type(exc).__name__})",
            route=route.name,
        ) from exc
    except botocore.exceptions.NoCredentialsError as exc:
        raise AccessDeniedError(
            "no AWS credentials found (environment, ~/.aws/credentials, profile or instance role)",
            route=route.name,
        ) from exc


def is_bedrock_answer(headers: Mapping[str, str]) -> bool:
    """Whether an HTTP answer carries Bedrock's headers (every AWS answer has a request id)."""
    names = {name.lower() for name in headers}
    return "x-amzn-requestid" in names or "x-amzn-errortype" in names


def _connection_errors() -> tuple[type[BaseException], ...]:
    """Failures of a connection that was made (evaluated only when an exception is being matched,
    so aiohttp is not imported before a client is)."""
    import aiohttp

    return (
        botocore.exceptions.ConnectionClosedError,
        botocore.exceptions.ResponseStreamingError,
        botocore.exceptions.IncompleteReadError,
        botocore.exceptions.HTTPClientError,
        aiohttp.ClientError,
        ConnectionError,
    )


def network_cause(exc: BaseException) -> str:
    """A few words on why a connection could not be made, from the exception and what it wraps."""
    import socket
    import ssl

    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        err = todo.pop(0)
        if id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, ConnectionRefusedError):
            return "connection refused"
        if isinstance(err, socket.gaierror):
            return "DNS lookup failed"
        if isinstance(err, ssl.SSLError):  # certificate failures too (CERTIFICATE_VERIFY_FAILED)
            reason = getattr(err, "reason", None) or getattr(getattr(err, "os_error", None), "reason", None)
            return f"TLS failed ({reason or 'handshake'})"
        if isinstance(err, TimeoutError):
            return "timed out connecting"
        if isinstance(err, botocore.exceptions.ProxyConnectionError):
            proxy = urllib.parse.urlsplit(str(err.kwargs.get("proxy_url") or ""))
            where = f" {proxy.hostname}:{proxy.port}" if proxy.hostname else ""  # never its password
            return f"could not connect through the proxy{where}"
        for inner in (
            getattr(err, "kwargs", {}).get("error"),
            getattr(err, "os_error", None),
            getattr(err, "certificate_error", None),
            err.__cause__,
            err.__context__,
        ):
            if isinstance(inner, BaseException):
                todo.append(inner)
    if isinstance(exc, botocore.exceptions.SSLError):
        return "TLS failed"
    return f"could not connect ({type(exc).__name__})"


def parse_completion(raw: bytes, headers: dict[str, str], latency_ms: float) -> Completion:
    """Reduce an InvokeModel answer to what a result row keeps (:func:`runner.answer.read_message`).

    A body that is not whole JSON was cut off on the way: :class:`EndpointUnavailableError`, retried
    like an outage. Whole JSON that is not a Messages response: :class:`MalformedResponseError`,
    retried like a 424 and not held against the route.
    """
    try:
        data = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError is one
        raise EndpointUnavailableError("the response body was cut off (not whole JSON)") from exc
    try:
        message = read_message(data)
    except NotAMessageError as exc:
        raise MalformedResponseError(
            f"Bedrock answered 200 with a body that is not a Messages response: {exc}"
        ) from None
    return Completion(
        text=message.text,
        stop_reason=message.stop_reason,
        usage=message.usage,
        request_id=headers.get("x-amzn-requestid"),
        latency_ms=latency_ms,
        server_latency_ms=_number(headers.get("x-amzn-bedrock-invocation-latency")),
        content=message.content,
        tool_input=message.tool_input,
    )


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


class AioBotoTransport:
    """InvokeModel over aioboto3, one client per region, opened for the life of a job.

    Use :meth:`open` as an async context manager; it builds every client up front, so the first row
    does not pay for client construction and a bad region or endpoint fails before the job starts.
    """

    def __init__(self, clients: dict[str, Any], *, timeout_s: float) -> None:
        self._clients = clients
        self._timeout_s = timeout_s

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        regions: Iterable[str],
        *,
        endpoint_url: str | None = None,
        max_in_flight: int = 64,
        timeout_s: float = 600.0,
        session: aioboto3.Session | None = None,
    ) -> AsyncIterator[AioBotoTransport]:
        session = await _signing_session(
            session,
            endpoint_url,
            lambda: PreflightError(
                "no AWS credentials found (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, "
                "AWS_PROFILE or an instance role); nothing was sent"
            ),
        )
        config = client_config(max_in_flight=max_in_flight, timeout_s=timeout_s)
        async with AsyncExitStack() as stack:
            clients: dict[str, Any] = {}
            for region in dict.fromkeys(regions):
                clients[region] = await stack.enter_async_context(
                    session.client(
                        "bedrock-runtime",
                        region_name=region,
                        endpoint_url=endpoint_url or None,
                        config=config,
                    )
                )
            yield cls(clients, timeout_s=timeout_s)

    def endpoint_url(self, route: Route) -> str:
        """The URL the client of ``route``'s region calls (for messages)."""
        return str(self._clients[route.region].meta.endpoint_url)

    async def invoke(self, route: Route, body: bytes) -> Completion:
        client = self._clients[route.region]
        start = time.perf_counter()
        with map_botocore_errors(route, timeout_s=self._timeout_s, endpoint=client.meta.endpoint_url):
            response = await client.invoke_model(
                modelId=route.model_id, body=body, contentType="application/json", accept="application/json"
            )
            async with response["body"] as stream:
                raw = await stream.read()
        latency_ms = (time.perf_counter() - start) * 1000.0
        headers: dict[str, str] = response["ResponseMetadata"].get("HTTPHeaders", {})
        try:
            return parse_completion(raw, headers, latency_ms)
        except (EndpointUnavailableError, MalformedResponseError) as exc:
            if not is_bedrock_answer(headers):
                where = self.endpoint_url(route)
                cause = "answered HTTP 200 without Bedrock's headers (not a Bedrock endpoint)"
                raise EndpointUnreachableError(
                    f"{where}: {cause}", endpoint=where, cause=cause, status=200, route=route.name
                ) from exc
            exc.route = route.name
            exc.request_id = headers.get("x-amzn-requestid")
            raise


# -- the batch control plane --------------------------------------------------------------------


class BatchJob(Protocol):
    """What the control plane needs to know of one batch job (the lane's ``ShardState`` is one)."""

    model_id: str
    region: str
    job_name: str
    token: str
    input_uri: str
    output_uri: str
    job_arn: str | None

    @property
    def route(self) -> Route: ...


class ControlPlane(Protocol):
    """The three Bedrock control-plane calls the batch lane makes; errors are ``runner.errors`` classes."""

    async def create_job(self, shard: BatchJob, *, role_arn: str, timeout_hours: int) -> str: ...

    async def get_job(self, shard: BatchJob) -> dict[str, Any]: ...

    async def find_job(self, shard: BatchJob) -> str | None: ...


class AioBotoControlPlane:
    """The ``bedrock`` control-plane client through aioboto3: one client per region, opened on first use.

    Same settings as the runtime transport (:func:`client_config`: botocore's retries off, the lane
    decides what to retry) and the same error translation (:func:`map_botocore_errors`).
    """

    def __init__(self, session: aioboto3.Session, stack: AsyncExitStack, endpoint_url: str | None) -> None:
        self._session = session
        self._stack = stack
        self._endpoint_url = endpoint_url
        self._clients: dict[str, Any] = {}
        self._config = client_config(max_in_flight=4, timeout_s=60.0)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, *, endpoint_url: str | None = None, session: aioboto3.Session | None = None
    ) -> AsyncIterator[AioBotoControlPlane]:
        session = await _signing_session(
            session,
            endpoint_url,
            lambda: BatchJobError(
                "no AWS credentials found for Bedrock batch inference (AWS_ACCESS_KEY_ID, "
                "~/.aws/credentials, AWS_PROFILE or an instance role); nothing was submitted"
            ),
        )
        async with AsyncExitStack() as stack:
            yield cls(session, stack, endpoint_url)

    async def _client(self, region: str) -> Any:
        client = self._clients.get(region)
        if client is None:
            client = await self._stack.enter_async_context(
                self._session.client(
                    "bedrock", region_name=region, endpoint_url=self._endpoint_url, config=self._config
                )
            )
            self._clients[region] = client
        return client

    async def create_job(self, shard: BatchJob, *, role_arn: str, timeout_hours: int) -> str:
        client = await self._client(shard.region)
        with map_botocore_errors(shard.route):
            answer = await client.create_model_invocation_job(
                jobName=shard.job_name,
                roleArn=role_arn,
                clientRequestToken=shard.token,
                modelId=shard.model_id,
                inputDataConfig={"s3InputDataConfig": {"s3Uri": shard.input_uri, "s3InputFormat": "JSONL"}},
                outputDataConfig={"s3OutputDataConfig": {"s3Uri": shard.output_uri}},
                timeoutDurationInHours=timeout_hours,
            )
        return str(answer["jobArn"])

    async def get_job(self, shard: BatchJob) -> dict[str, Any]:
        assert shard.job_arn is not None
        client = await self._client(shard.region)
        with map_botocore_errors(shard.route):
            answer: dict[str, Any] = await client.get_model_invocation_job(jobIdentifier=shard.job_arn)
        return answer

    async def invocation_logging(self, region: str) -> dict[str, Any] | None:
        """GetModelInvocationLoggingConfiguration in ``region``: its ``loggingConfig``, ``None`` when
        logging is not configured. Errors are ``runner.errors`` classes, as for the other calls."""
        client = await self._client(region)
        with map_botocore_errors(Route(model_id="-", region=region, geography="-")):
            answer: dict[str, Any] = await client.get_model_invocation_logging_configuration()
        config = answer.get("loggingConfig")
        return config if isinstance(config, dict) else None

    async def find_job(self, shard: BatchJob) -> str | None:
        """The job a lost create made, found by its name and token (ListModelInvocationJobs)."""
        client = await self._client(shard.region)
        token: str | None = None
        with map_botocore_errors(shard.route):
            while True:
                kwargs: dict[str, Any] = {"nameContains": shard.job_name, "maxResults": 100}
                if token:
                    kwargs["nextToken"] = token
                page = await client.list_model_invocation_jobs(**kwargs)
                for summary in page.get("invocationJobSummaries", []):
                    if summary.get("clientRequestToken") == shard.token:
                        return str(summary["jobArn"])
                token = page.get("nextToken")
                if not token:
                    return None


# -- credentials and client settings -------------------------------------------------------------


def is_loopback(endpoint_url: str | None) -> bool:
    """Whether ``endpoint_url`` points at this machine (the emulator), never at AWS."""
    if not endpoint_url:
        return False
    host = urllib.parse.urlsplit(endpoint_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def placeholder_credentials(endpoint_url: str | None) -> tuple[str, str] | None:
    """What to sign with when no credentials were found, (key id, secret): placeholders for a local
    endpoint (the emulator checks a signature's shape, not its secret), ``None`` for AWS (the caller
    stops)."""
    return ("emulator", "emulator") if is_loopback(endpoint_url) else None


async def _signing_session(
    session: aioboto3.Session | None, endpoint_url: str | None, missing: Callable[[], BatchError]
) -> aioboto3.Session:
    """``session`` (or the default chain's) when it finds credentials, else the placeholders' for a
    local endpoint; ``missing()`` is raised for AWS without credentials."""
    import aioboto3

    try:
        session = session or aioboto3.Session()
    except botocore.exceptions.ProfileNotFound as exc:
        raise AwsSetupError(f"{exc} (from --profile or AWS_PROFILE); nothing was sent") from None
    if await session.get_credentials() is not None:
        return session
    placeholders = placeholder_credentials(endpoint_url)
    if placeholders is None:
        raise missing()
    key_id, secret = placeholders
    return aioboto3.Session(aws_access_key_id=key_id, aws_secret_access_key=secret)


def control_client(
    region: str, endpoint_url: str | None, *, connect_timeout_s: float, read_timeout_s: float
) -> Any:
    """A plain boto3 ``bedrock`` client for a quick look at the account (``models``): no retries."""
    import boto3

    try:
        session = boto3.Session()
    except botocore.exceptions.ProfileNotFound as exc:
        raise AwsSetupError(f"{exc} (from --profile or AWS_PROFILE)") from None
    if (placeholders := placeholder_credentials(endpoint_url)) and session.get_credentials() is None:
        key_id, secret = placeholders
        session = boto3.Session(aws_access_key_id=key_id, aws_secret_access_key=secret)
    config = Config(
        retries={"total_max_attempts": 1}, connect_timeout=connect_timeout_s, read_timeout=read_timeout_s
    )
    return session.client("bedrock", region_name=region, endpoint_url=endpoint_url or None, config=config)


def logging_destinations(config: Mapping[str, Any] | None) -> tuple[str, ...]:
    """Where a ``loggingConfig`` (GetModelInvocationLoggingConfiguration) sends invocation logs;
    empty when logging is off."""
    if not config:
        return ()
    out: list[str] = []
    cloudwatch = config.get("cloudWatchConfig") or {}
    if cloudwatch.get("logGroupName"):
        out.append(f"CloudWatch Logs {cloudwatch['logGroupName']}")
    s3 = config.get("s3Config") or {}
    if s3.get("bucketName"):
        prefix = s3.get("keyPrefix") or ""
        out.append(f"s3://{s3['bucketName']}/{prefix}".rstrip("/"))
    return tuple(out)


USER_AGENT = (
    f"bedrock-batch/{__version__} Python/{platform.python_version()} {platform.system()}/{platform.release()}"
)
"""What the service sees, fixed once per process (see :func:`client_config`)."""


def client_config(*, max_in_flight: int, timeout_s: float) -> Config:
    """botocore settings for a job: no hidden retries, a pool per region as large as the job's concurrency.

    ``read_timeout`` is the call's deadline: InvokeModel sends nothing until its whole answer is
    ready, so waiting for the first byte is waiting for the answer. The User-Agent is a fixed
    string: botocore rebuilds its own twice per request, sanitising every character of some twenty
    components, a fifth of the CPU of a call (1.18 -> 0.87 ms per call, A/B against the emulator).
    """
    return Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=max(10, max_in_flight),
        connect_timeout=10,
        read_timeout=timeout_s,
        tcp_keepalive=True,
        parameter_validation=False,
        user_agent=USER_AGENT,
    )
