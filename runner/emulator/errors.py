"""The errors Bedrock sends, with the status codes of botocore's service models.

Statuses come from ``botocore/data/bedrock-runtime/2023-09-30/service-2.json`` (and the control plane's
``bedrock/2023-04-20``): botocore does not look at the status to name an exception, it reads the
``x-amzn-ErrorType`` header, so the header is what makes ``client.exceptions.ThrottlingException``
appear; the status is what makes retry policies (botocore's and ours) treat it the right way.
"""

from __future__ import annotations

from dataclasses import dataclass

ERROR_TYPE_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
"""What Bedrock appends to the error name in ``x-amzn-ErrorType`` (botocore keeps the part before ``:``)."""


@dataclass(frozen=True, slots=True)
class ErrorKind:
    """One modelled exception: its HTTP status and the message Bedrock usually sends with it."""

    name: str
    status: int
    message: str

    @property
    def header(self) -> str:
        """The ``x-amzn-ErrorType`` header value."""
        return self.name + ERROR_TYPE_SUFFIX


ERRORS: dict[str, ErrorKind] = {
    e.name: e
    for e in (
        ErrorKind("ThrottlingException", 429, "Too many requests, please wait before trying again."),
        ErrorKind(
            "ModelNotReadyException",
            429,
            "Model is not ready to serve inference requests. The AWS SDK will automatically retry the "
            "operation up to 5 times.",
        ),
        ErrorKind(
            "ServiceUnavailableException", 503, "Bedrock is unable to process your request at this time."
        ),
        ErrorKind(
            "InternalServerException",
            500,
            "The system encountered an unexpected error during processing. Try your request again.",
        ),
        ErrorKind(
            "ModelTimeoutException",
            408,
            "Model has timed out in processing the request. Try your request again.",
        ),
        ErrorKind("ModelErrorException", 424, "The model encountered an error processing the request."),
        ErrorKind("ModelStreamErrorException", 424, "The model stream encountered an error."),
        ErrorKind("ValidationException", 400, "Malformed input request, please reformat your input."),
        ErrorKind(
            "AccessDeniedException",
            403,
            "You don't have access to the model with the specified model ID.",
        ),
        ErrorKind(
            "ResourceNotFoundException",
            404,
            "Could not resolve the foundation model from the provided model identifier.",
        ),
        ErrorKind(
            "ServiceQuotaExceededException",
            400,
            "Your request exceeds the service quota for your account.",
        ),
        ErrorKind("ConflictException", 400, "The request conflicts with the current state of the resource."),
        # Not in the service model: what the AWS front door answers for a path no operation owns.
        ErrorKind("UnknownOperationException", 404, "Unknown operation."),
    )
}

TOKENS_THROTTLED_MESSAGE = "Too many tokens, please wait before trying again."
"""The ThrottlingException message Bedrock sends when the tokens-per-minute quota, not the rate, bites."""


class BedrockError(Exception):
    """An error answer: raised anywhere in request handling, turned into the wire shape in one place."""

    def __init__(self, name: str, message: str | None = None) -> None:
        kind = ERRORS[name]
        self.kind = kind
        self.message = kind.message if message is None else message
        super().__init__(f"{name}: {self.message}")

    @property
    def name(self) -> str:
        return self.kind.name

    @property
    def status(self) -> int:
        return self.kind.status


def validation(message: str) -> BedrockError:
    """A ``ValidationException`` with ``message`` (the most common error by far)."""
    return BedrockError("ValidationException", message)
