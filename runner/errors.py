"""Every exception bedrock-batch raises, in one tree whose branches follow who must act.

::

    BatchError
    ├── SpecError                  the user fixes the job spec (TOML or flags)        exit 2
    ├── SourceError                the input cannot be read or does not fit the spec   exit 2
    ├── SinkError                  results cannot be written                           exit 2
    ├── StateError                 the job directory is inconsistent or in use         exit 2
    │   └── LockedError            another runner holds the job's lock
    ├── PreflightError             no route survived the checks before the first paid call   exit 2
    ├── AwsSetupError              the AWS profile or config file cannot be used                exit 2
    ├── BatchJobError              a batch inference job cannot be created, uploaded or read  exit 2
    ├── JobEnvironmentError        the disk, output or input failed after paid calls began  exit 3
    ├── RowError                   one row cannot become a request: becomes an error row
    └── InvocationError            one Bedrock call failed
        ├── RetryableError         worth another attempt (backoff, maybe another route)
        │   ├── ThrottledError         429 ThrottlingException, TooManyRequestsException
        │   │   └── ModelNotReadyError 429 ModelNotReadyException: this route, not the quota
        │   ├── ModelTimeoutError      408 ModelTimeoutException, or our own deadline
        │   ├── ModelError             424 ModelErrorException (retried once or twice)
        │   ├── MalformedResponseError a whole 200 body that is not a Messages response (as a 424,
        │   │                          and the route's breaker is not told)
        │   └── EndpointUnavailableError  5xx, connection reset, cut-off body
        │       └── EndpointUnreachableError  no Bedrock at the other end: refused, DNS, TLS, not Bedrock
        ├── PermanentError         another attempt would fail the same way
        │   ├── ModelValidationError   400 ValidationException: the row is bad
        │   ├── RouteError             the route, not the row, is wrong: never use it again
        │   │   ├── AccessDeniedError      403 AccessDeniedException
        │   │   └── RouteNotFoundError     404 ResourceNotFoundException
        │   └── QuotaExceededError     400 ServiceQuotaExceededException

A failed row never leaves the task group as an exception: it becomes an ``error`` row whose
``error_type`` is the class name. Only job-fatal errors reach the CLI, which prints one line.
"""

from __future__ import annotations

from typing import Any


class BatchError(Exception):
    """Root of every error bedrock-batch raises on purpose."""


class SpecError(BatchError):
    """The job spec is wrong; the message names the file and key."""


class SourceError(BatchError):
    """The input cannot be read, or lacks a column the spec names."""


class SinkError(BatchError):
    """Results cannot be written to the output directory."""


class StateError(BatchError):
    """The job directory cannot be used as it is (changed input, foreign files)."""


class LockedError(StateError):
    """Another runner holds the job's lock."""


class PreflightError(BatchError):
    """No route is usable: found before any paid call."""


class AwsSetupError(BatchError):
    """The AWS setup cannot be used as it is: an unknown profile, an unreadable config file."""


class BatchJobError(BatchError):
    """A Bedrock batch inference job cannot be created, its shard uploaded or its status read.

    Jobs already submitted keep running on AWS and are recorded in the job directory: fixing the
    cause (role, bucket, permissions) and rerunning re-attaches to them instead of paying again.
    """


class JobEnvironmentError(BatchError):
    """The job's environment failed after paid calls began: disk full, the output path unusable, the
    input unreadable. Nothing is lost (results are journalled as they arrive); fix the cause and rerun.

    ``cause`` is the error that stopped the job (a ``SinkError``, ``SourceError``, ``StateError`` or
    ``OSError``).
    """

    def __init__(self, message: str, *, cause: BaseException) -> None:
        super().__init__(message)
        self.cause = cause


def leaf_error(exc: BaseException) -> BaseException:
    """The error an exception group stands for: its first ``BatchError`` leaf, else its first
    ``Exception`` leaf (not a cancellation); ``exc`` itself when it is no group. Task groups wrap
    whatever a task raised, and the user should read the error, not the group."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = list(_leaves(exc))
    for leaf in leaves:
        if isinstance(leaf, BatchError):
            return leaf
    for leaf in leaves:
        if isinstance(leaf, Exception):  # not a cancellation, KeyboardInterrupt or SystemExit
            return leaf
    return leaves[0] if leaves else exc


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


class RowError(BatchError):
    """A row cannot become a request (null prompt, malformed messages, too long)."""

    def __init__(self, message: str, *, error_type: str = "RowError") -> None:
        super().__init__(message)
        self.error_type = error_type


class InvocationError(BatchError):
    """A Bedrock call failed. ``code`` is Bedrock's error name, when it sent one."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        route: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.request_id = request_id
        """Bedrock's ``x-amzn-RequestId``: set exactly when Bedrock itself answered."""
        self.route = route

    @property
    def error_type(self) -> str:
        """What the result row's ``error_type`` column says: Bedrock's name when there is one."""
        return self.code or type(self).__name__


class RetryableError(InvocationError):
    """Another attempt, after a pause or on another route, may succeed."""


class ThrottledError(RetryableError):
    """The quota is talking: slow down."""


class ModelNotReadyError(ThrottledError):
    """The model is not loaded on this route yet: a 429 like the quota's, but the row tries the next
    route rather than wait for this one's pace."""


class ModelTimeoutError(RetryableError):
    """The model (or our own deadline) took too long."""


class ModelError(RetryableError):
    """The model failed to answer; worth one or two more tries at most."""


class MalformedResponseError(RetryableError):
    """A 200 whose body is whole JSON but not a Messages response (``{}``, no ``content``).

    Not a cut-off body (that is :class:`EndpointUnavailableError`) and not an outage: the endpoint
    answers, just not with an answer. Retried as few times as a 424 (``model_error_attempts``) and
    never counted against the route's circuit breaker, so the rows end as error rows within seconds.
    """


class EndpointUnavailableError(RetryableError):
    """5xx, reset connection or truncated body: the endpoint, not the row, is unwell."""


class EndpointUnreachableError(EndpointUnavailableError):
    """Bedrock was not reached at all: the connection was refused or timed out, the name did not
    resolve, TLS failed, or what answered is not Bedrock (a proxy, a wrong ``--endpoint-url``).

    ``endpoint`` is the URL that was tried, ``cause`` a few words on what went wrong there. Retryable
    (a network blip mid-job heals), but it says nothing about a row: preflight stops on it, and the
    pool leaves rows pending rather than mark them failed for it.
    """

    def __init__(self, message: str, *, endpoint: str, cause: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.endpoint = endpoint
        self.cause = cause


class PermanentError(InvocationError):
    """Another attempt would fail the same way."""


class ModelValidationError(PermanentError):
    """Bedrock rejected the request body: the row is bad."""


class RouteError(PermanentError):
    """The route itself cannot be used (no access, no such profile in that region)."""


class AccessDeniedError(RouteError):
    """403: the credentials may not call this route (often ``global.`` under regional IAM policies)."""


class RouteNotFoundError(RouteError):
    """404: the model or profile does not exist in that region."""


class QuotaExceededError(PermanentError):
    """ServiceQuotaExceededException: a hard account limit, not a throttle."""
