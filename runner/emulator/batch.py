"""Bedrock batch inference, emulated: the four job operations, run against a real S3-compatible server.

The shapes are those of ``botocore/data/bedrock/2023-04-20/service-2.json``:

==============================================  ===========================================================
``POST /model-invocation-job``                   ``CreateModelInvocationJob``: validated, idempotent on
                                                 ``clientRequestToken``; answers ``{"jobArn"}``
``GET  /model-invocation-job/{jobIdentifier}``   ``GetModelInvocationJob`` (an ARN or the 12-character id)
``GET  /model-invocation-jobs``                  ``ListModelInvocationJobs``: ``nameContains``,
                                                 ``statusEquals``, ``sortOrder``, ``maxResults``/``nextToken``
``POST /model-invocation-job/{id}/stop``         ``StopModelInvocationJob``: ``Stopping``, then ``Stopped``
==============================================  ===========================================================

A job lives as one asyncio task on the emulator's loop: ``Submitted`` for ``[batch] submitted_s``,
``InProgress`` for ``duration_s``, then it reads ``s3InputDataConfig.s3Uri`` (one JSONL file, or
every ``*.jsonl`` under a prefix) from ``[batch] s3_endpoint_url``, answers each record exactly as
InvokeModel would (same validation, same seeded answer and token counts), and writes Bedrock's layout:
``{s3OutputDataConfig.s3Uri}/{job id}/{input file name}.out`` with one ``{recordId, modelInput,
modelOutput}`` or ``{recordId, modelInput, error: {errorCode, errorMessage}}`` line per record, in
an order that is not the input's (as on AWS), and ``manifest.json.out`` with the counts. S3 I/O goes
through pyarrow in a worker thread, so the loop keeps answering while a job runs.

Every create call is counted (``create_model_invocation_job``, retries included), and so are the
distinct jobs made and the records answered (``batch`` in the counters), which is how a test proves a
restarted runner re-attached instead of paying for a shard twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from runner.catalog import Model
from runner.emulator.config import BatchSettings, EmulatorConfig, OutputTokens
from runner.emulator.control import ACCOUNT_ID
from runner.emulator.errors import BedrockError, validation
from runner.emulator.routes import prompt_uniform, route_error
from runner.emulator.wire import parse_invoke, render_answer

_JOB_NAME = re.compile(r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}")
_TOKEN = re.compile(r"[a-zA-Z0-9]{1,256}(-*[a-zA-Z0-9]){0,256}")
_ROLE_ARN = re.compile(r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+")
ACTIVE = frozenset({"Submitted", "Validating", "Scheduled", "InProgress", "Stopping"})


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _missing(key: str) -> BedrockError:
    return validation(f"1 validation error detected: Value null at '{key}' failed to satisfy constraint")


def _s3_uri(config: Any, union: str, member: str) -> str:
    inner = config.get(union) if isinstance(config, Mapping) else None
    uri = inner.get("s3Uri") if isinstance(inner, Mapping) else None
    if not isinstance(uri, str) or not uri.startswith("s3://") or len(uri) <= len("s3://"):
        raise validation(
            f"1 validation error detected: Value at '{member}.{union}.s3Uri' must be an s3:// URI"
        )
    return uri


@dataclass(eq=False)
class Job:
    """One batch job's record (what Get answers) and its running task."""

    job_id: str
    description: dict[str, Any]
    region: str
    task: asyncio.Task[None] | None = None
    records: dict[str, int] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.description["status"])

    def set_status(self, status: str, message: str | None = None) -> None:
        now = _now()
        self.description["status"] = status
        self.description["lastModifiedTime"] = now
        if message is not None:
            self.description["message"] = message
        if status not in ACTIVE:
            self.description["endTime"] = now


class BatchJobs:
    """The emulator's batch jobs. Lives on the emulator's loop; :meth:`close` cancels running jobs."""

    def __init__(self, config: Callable[[], EmulatorConfig]) -> None:
        self._config = config
        self.jobs: dict[str, Job] = {}
        self.tokens: dict[str, str] = {}
        self.creates = 0
        self.created = 0
        self.records_ok = 0
        self.records_error = 0
        self.input_tokens = 0
        self.output_tokens = 0

    def close(self) -> None:
        for job in self.jobs.values():
            if job.task is not None and not job.task.done():
                job.task.cancel()

    def counters(self) -> dict[str, Any]:
        statuses: dict[str, int] = {}
        for job in self.jobs.values():
            statuses[job.status] = statuses.get(job.status, 0) + 1
        return {
            "jobs_created": self.created,
            "jobs": statuses,
            "records": {"ok": self.records_ok, "error": self.records_error},
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }

    # -- operations -----------------------------------------------------------------------------

    def create(self, region: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """``CreateModelInvocationJob``; the caller has counted the call already."""
        for key in ("jobName", "roleArn", "modelId", "inputDataConfig", "outputDataConfig"):
            if key not in data:
                raise _missing(key)
        token = data.get("clientRequestToken")
        if token is not None:
            if not isinstance(token, str) or not _TOKEN.fullmatch(token):
                raise validation("Value at 'clientRequestToken' failed to satisfy constraint")
            if token in self.tokens:
                return {"jobArn": self.tokens[token]}
        name = data["jobName"]
        if not isinstance(name, str) or not _JOB_NAME.fullmatch(name):
            raise validation(f"Value '{name}' at 'jobName' failed to satisfy constraint")
        if not isinstance(data["roleArn"], str) or not _ROLE_ARN.fullmatch(data["roleArn"]):
            raise validation(f"Value '{data['roleArn']}' at 'roleArn' failed to satisfy constraint")
        hours = data.get("timeoutDurationInHours", 24)
        if isinstance(hours, bool) or not isinstance(hours, int) or not 24 <= hours <= 168:
            raise validation("Value at 'timeoutDurationInHours' must be between 24 and 168")
        model_id = str(data["modelId"])
        _, error = route_error(model_id.rsplit("/", 1)[-1], region)
        if error is not None:
            raise error
        _s3_uri(data["inputDataConfig"], "s3InputDataConfig", "inputDataConfig")
        _s3_uri(data["outputDataConfig"], "s3OutputDataConfig", "outputDataConfig")
        config = self._config()
        limit = config.batch.max_jobs
        if limit and sum(1 for j in self.jobs.values() if j.status in ACTIVE) >= limit:
            raise BedrockError(
                "ServiceQuotaExceededException",
                f"You have reached the limit of {limit} batch inference jobs in progress for this account.",
            )
        self.created += 1
        job_id = hashlib.sha256(f"{config.seed}|{self.created}|{name}|{token}".encode()).hexdigest()[:12]
        arn = f"arn:aws:bedrock:{region}:{ACCOUNT_ID}:model-invocation-job/{job_id}"
        now = _now()
        description: dict[str, Any] = {
            "jobArn": arn,
            "jobName": name,
            "modelId": model_id,
            "clientRequestToken": token,
            "roleArn": data["roleArn"],
            "status": "Submitted",
            "submitTime": now,
            "lastModifiedTime": now,
            "inputDataConfig": data["inputDataConfig"],
            "outputDataConfig": data["outputDataConfig"],
            "timeoutDurationInHours": hours,
        }
        job = Job(job_id=job_id, description=description, region=region)
        settings = config.batch
        if settings.s3_endpoint_url:
            job.task = asyncio.get_running_loop().create_task(self._run(job, settings, config.seed))
        else:
            description["message"] = "No S3 endpoint is configured ([batch] s3_endpoint_url): not run."
        self.jobs[job_id] = job
        if token is not None:
            self.tokens[token] = arn
        return {"jobArn": arn}

    def _find(self, ident: str) -> Job:
        job = self.jobs.get(ident.rsplit("/", 1)[-1])
        if job is None:
            raise BedrockError("ResourceNotFoundException", f"The job {ident} does not exist.")
        return job

    def get(self, ident: str) -> dict[str, Any]:
        """``GetModelInvocationJob``."""
        return {k: v for k, v in self._find(ident).description.items() if v is not None}

    def list(self, query: Mapping[str, str]) -> dict[str, Any]:
        """``ListModelInvocationJobs`` (newest first unless ``sortOrder=Ascending``), paginated."""
        name = query.get("nameContains")
        status = query.get("statusEquals")
        jobs = [
            j.description
            for j in self.jobs.values()
            if (name is None or name in j.description["jobName"])
            and (status is None or j.description["status"] == status)
        ]
        if query.get("sortOrder", "Descending") == "Descending":
            jobs.reverse()
        try:
            start = int(query.get("nextToken", "0"))
            size = int(query.get("maxResults", "1000"))
        except ValueError as exc:
            raise validation("nextToken or maxResults is not valid.") from exc
        if start < 0 or not 1 <= size <= 1000:
            raise validation("maxResults must be between 1 and 1000.")
        page: dict[str, Any] = {
            "invocationJobSummaries": [
                {k: v for k, v in d.items() if v is not None} for d in jobs[start : start + size]
            ]
        }
        if start + size < len(jobs):
            page["nextToken"] = str(start + size)
        return page

    def stop(self, ident: str) -> dict[str, Any]:
        """``StopModelInvocationJob``: a running job stops (nothing written); an ended one conflicts."""
        job = self._find(ident)
        if job.status not in ACTIVE:
            raise BedrockError("ConflictException", f"The job {ident} is {job.status} and cannot be stopped.")
        job.set_status("Stopping")
        if job.task is not None and not job.task.done():
            job.task.cancel()
        job.set_status("Stopped", "Stopped by StopModelInvocationJob.")
        return {}

    # -- running --------------------------------------------------------------------------------

    async def _run(self, job: Job, settings: BatchSettings, seed: int) -> None:
        try:
            await asyncio.sleep(settings.submitted_s)
            job.set_status("InProgress")
            await asyncio.sleep(settings.duration_s)
            profile = str(job.description["modelId"]).rsplit("/", 1)[-1]
            lengths = self._config().settings_for(profile, job.region).output_tokens
            counts = await asyncio.to_thread(
                _process, job.description, job.job_id, job.region, settings, seed, lengths
            )
        except asyncio.CancelledError:
            raise
        except _JobFailed as exc:
            job.set_status("Failed", str(exc))
            return
        except Exception as exc:  # an emulator bug or an S3 outage: the job fails, the server lives
            job.set_status("Failed", f"The job failed: {type(exc).__name__}: {exc}")
            return
        self.records_ok += counts.ok
        self.records_error += counts.error
        self.input_tokens += counts.input_tokens
        self.output_tokens += counts.output_tokens
        job.records = {"ok": counts.ok, "error": counts.error}
        job.set_status(settings.end_status, counts.message)


class _JobFailed(Exception):
    """The job ends ``Failed`` with this message (bad input, missing file)."""


@dataclass(frozen=True, slots=True)
class _Counts:
    ok: int
    error: int
    input_tokens: int
    output_tokens: int
    message: str | None


def _filesystem(settings: BatchSettings, region: str) -> pafs.S3FileSystem:
    parts = urllib.parse.urlsplit(settings.s3_endpoint_url)
    return pafs.S3FileSystem(
        endpoint_override=parts.netloc + parts.path.rstrip("/"),
        scheme=parts.scheme,
        region=region,
        force_virtual_addressing=False,
    )


def _path(uri: str) -> str:
    return uri[len("s3://") :].rstrip("/")


def _lines(fs: pafs.FileSystem, path: str) -> Iterator[bytes]:
    with fs.open_input_stream(path) as f:
        rest = b""
        while chunk := f.read(1 << 20):
            parts = (rest + chunk).split(b"\n")
            rest = parts.pop()
            yield from (p for p in parts if p.strip())
        if rest.strip():
            yield rest


def _inputs(fs: pafs.FileSystem, uri: str) -> list[str]:
    """The JSONL files a job reads: the file itself, or the ``*.jsonl`` directly under a prefix."""
    path = _path(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [path]
    if info.type == pafs.FileType.Directory:
        found = fs.get_file_info(pafs.FileSelector(path, recursive=False))
        files = sorted(f.path for f in found if f.type == pafs.FileType.File and f.path.endswith(".jsonl"))
        if files:
            return files
    raise _JobFailed(f"No JSONL input found at {uri}.")


def _process(
    description: Mapping[str, Any],
    job_id: str,
    region: str,
    settings: BatchSettings,
    seed: int,
    lengths: OutputTokens,
) -> _Counts:
    """Answer every record of the job's input and write the output files (a worker thread)."""
    fs = _filesystem(settings, region)
    model_id = str(description["modelId"]).rsplit("/", 1)[-1]
    model, error = route_error(model_id, region)
    if model is None or error is not None:
        raise _JobFailed(f"The model {model_id} cannot be used in {region}.")
    input_uri = description["inputDataConfig"]["s3InputDataConfig"]["s3Uri"]
    output_uri = description["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
    out_dir = f"{_path(output_uri)}/{job_id}"
    partial = settings.end_status in ("Expired", "PartiallyCompleted")
    if settings.end_status == "Failed":
        raise _JobFailed("The job failed (emulated: [batch] end_status = 'Failed').")
    fail = set(settings.record_errors)
    total = ok = errors = input_tokens = output_tokens = 0
    for path in _inputs(fs, input_uri):
        lines = list(_lines(fs, path))
        if partial:
            lines = lines[: len(lines) // 2]
        out: list[bytes] = []
        for number, raw in enumerate(lines):
            total += 1
            entry = _answer(raw, number, model, seed, lengths, settings, fail)
            if "modelOutput" in entry:
                ok += 1
                usage = entry["modelOutput"]["usage"]
                input_tokens += usage["input_tokens"]
                output_tokens += usage["output_tokens"]
            else:
                errors += 1
            out.append(json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode())
        # Bedrock gives no order guarantee: write the answers in an order that is not the input's.
        out.sort(key=lambda line: hashlib.sha256(line).digest())
        name = path.rsplit("/", 1)[-1]
        with fs.open_output_stream(f"{out_dir}/{name}.out") as f:
            for line in out:
                f.write(line + b"\n")
    manifest = {
        "totalRecordCount": total,
        "processedRecordCount": total,
        "successRecordCount": ok,
        "errorRecordCount": errors,
        "inputTokenCount": input_tokens,
        "outputTokenCount": output_tokens,
    }
    with fs.open_output_stream(f"{out_dir}/manifest.json.out") as f:
        f.write(json.dumps(manifest).encode())
    message = (
        "Emulated: the job ran out of time; unprocessed records are not in the output." if partial else None
    )
    return _Counts(ok, errors, input_tokens, output_tokens, message)


def _answer(
    raw: bytes,
    number: int,
    model: Model,
    seed: int,
    lengths: OutputTokens,
    settings: BatchSettings,
    fail: set[str],
) -> dict[str, Any]:
    """One output entry: the InvokeModel answer to the record, or its error."""
    try:
        record = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("modelInput"), dict):
        return {
            "recordId": f"{number:011d}",
            "error": {
                "errorCode": 400,
                "errorMessage": "Malformed input record: expected recordId and modelInput.",
            },
        }
    record_id = str(record.get("recordId") or f"{number:011d}")
    entry: dict[str, Any] = {"recordId": record_id, "modelInput": record["modelInput"]}
    draw = int.from_bytes(hashlib.sha256(f"{seed}|batch|{record_id}".encode()).digest()[:4], "big") / 2**32
    if record_id in fail or draw < settings.record_error_rate:
        entry["error"] = {
            "errorCode": settings.record_error_code,
            "errorMessage": "The model failed to process the record (emulated fault).",
        }
        return entry
    body = json.dumps(record["modelInput"], ensure_ascii=False, separators=(",", ":")).encode()
    try:
        invoke = parse_invoke(body, model)
    except BedrockError as exc:
        entry["error"] = {"errorCode": exc.status, "errorMessage": exc.message}
        return entry
    answer = render_answer(
        invoke,
        model,
        seed=seed,
        output_tokens=lengths.pick(prompt_uniform(invoke.prompt_key, seed)),
        message_id=f"msg_bdrk_01batch{hashlib.sha256(body).hexdigest()[:18]}",
    )
    entry["modelOutput"] = json.loads(answer.body)
    return entry
