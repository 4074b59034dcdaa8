"""The job spec: a TOML file plus CLI overrides, validated once, before anything is paid for.

The spec is a tree of frozen dataclasses. Each field carries its help text in ``metadata``, and the
parser and the JSON Schema in ``schemas/job_spec.schema.json`` are both derived from those dataclasses,
so the documentation, the checks and the code cannot drift apart (a test keeps the file equal).
Every error names the file and the key, because the person reading it is about to edit that key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from runner import catalog
from runner.awsconfig import Setting, resolve_region
from runner.errors import SpecError

Mode = Literal["on_demand", "batch"]

MAX_IN_FLIGHT = 4096
"""Ceiling of ``[limits] max_in_flight``. Each request in flight holds a worker, a connection and its
buffers (about 10 kB without the body); 4,096 covers the largest on-demand quotas at long latencies
(requests per minute x seconds per request), and stays within the open-file limits of a usual host."""

EXTRA_KEYS: tuple[str, ...] = ("tools", "tool_choice", "thinking", "metadata")
"""Body keys ``[request] extra`` may set: the Anthropic Messages keys Bedrock accepts that the spec has
no key of its own for. Bedrock refuses any other key (``extraneous key [...] is not permitted``)."""

TOOL_CHOICE_TYPES: tuple[str, ...] = ("auto", "any", "tool", "none")
THINKING_MIN_BUDGET = 1024
"""Smallest ``thinking.budget_tokens`` Bedrock accepts."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A spec field: its default and the one sentence of help the schema and docs show."""
    if isinstance(default, list | dict):
        factory: Callable[[], Any] = default.copy
        return field(default_factory=factory, metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True, slots=True)
class JobSection:
    name: str = _f("", "Job name for logs and reports; defaults to the spec file's stem.")
    input: str = _f(
        "",
        "Parquet file, directory of Parquet files, or s3:// URI; relative to the spec file.",
        required=True,
    )
    output: str = _f(
        "",
        "Job directory (results.parquet, the runner's working files); relative to the spec file.",
        required=True,
    )
    mode: Mode = _f("on_demand", "on_demand (InvokeModel) or batch (Bedrock batch inference, 50 % price).")


@dataclass(frozen=True, slots=True)
class ModelSection:
    id: str = _f("", "Base model id (anthropic.claude-...) or an inference profile id.", required=True)
    region: str = _f(
        "",
        "Home region (a Bedrock region the catalogue knows); else AWS_REGION, AWS_DEFAULT_REGION, "
        "the profile's region, us-east-1.",
    )
    regions: list[str] = _f(
        [], "Source regions to call from, each with its own quota (e.g. ['us-east-1', 'us-west-2'])."
    )
    endpoints: list[str] = _f(
        [], "Route order by geography, e.g. ['global', 'us']. Default: global, then the home geography."
    )
    residency: str = _f(
        "", "Keep every call inside this geography (us, eu, jp, apac, au); never call global."
    )
    endpoint_url: str = _f("", "Send every Bedrock call here instead of AWS (the emulator).")
    preflight: bool = _f(True, "One minimal request per route before the job, to catch AccessDenied early.")
    catalog: str = _f(
        "",
        "User catalogue (TOML) merged over the built-in one: models, geographies, regions, prices, "
        "application profile ARNs (docs/catalog.md); else $BEDROCK_BATCH_CATALOG.",
    )


@dataclass(frozen=True, slots=True)
class ColumnsSection:
    id: str = _f("", "Column with a unique row id; default: the row number.")
    prompt: str = _f("", "Column with the user prompt text (or use messages, or template).")
    messages: str = _f("", "Column with Messages API turns: JSON text or a list of {role, content} structs.")
    template: str = _f(
        "", "User prompt template with {column} placeholders, filled per row; {{ and }} for literal braces."
    )
    system: str = _f("", "System prompt shared by every row.")
    system_column: str = _f("", "Column with a per-row system prompt.")
    cache_system: bool = _f(False, "Mark the shared system prompt with cache_control (prompt caching).")
    document: str = _f(
        "",
        "Column with a PDF, as bytes or a path to a regular file, sent as a document block (at most "
        "18,000,000 bytes: an InvokeModel body's limit).",
    )
    keep: list[str] = _f(
        [],
        "Input columns copied to results.parquet (e.g. a team column for chargeback); not a result "
        "column's name.",
    )
    overrides: dict[str, str] = _f(
        {}, "Per-row request parameters from columns, e.g. {max_tokens = 'max_tokens_col'}."
    )


@dataclass(frozen=True, slots=True)
class RequestSection:
    max_tokens: int = _f(1024, "Upper bound of output tokens per request (reserved against the quota).")
    temperature: float | None = _f(None, "Sampling temperature, 0 to 1.")
    top_p: float | None = _f(None, "Nucleus sampling, 0 to 1 (Sonnet 4.5 / Haiku 4.5: not with temperature).")
    top_k: int | None = _f(None, "Top-k sampling, 0 or more.")
    stop_sequences: list[str] = _f([], "Stop sequences, each with a character that is not whitespace.")
    anthropic_beta: list[str] = _f([], "Beta flags sent in the body, e.g. ['context-1m-2025-08-07'].")
    extra: dict[str, Any] = _f(
        {}, "Other body keys passed through as they are: tools, tool_choice, thinking, metadata."
    )
    max_prompt_tokens: int = _f(
        0, "Rows whose estimated prompt is longer become error rows; 0: model's window."
    )


@dataclass(frozen=True, slots=True)
class LimitsSection:
    max_in_flight: int = _f(
        64, f"Most requests in flight at once (all routes together), 1 to {MAX_IN_FLIGHT:,}."
    )
    tpm: int | dict[str, int] = _f(
        0,
        "Tokens-per-minute quota per route to stay under; 0: find it adaptively. A table gives it per "
        "region or route: {'us-east-1' = 800_000, 'global@us-west-2' = 400_000} (others: found).",
    )
    adaptive: bool = _f(True, "Pace each route to its quota, learnt from throttles (false: a fixed pool).")
    max_cost_usd: float = _f(
        0.0, "Stop admitting rows once spent + reserved cost would pass this; 0: no cap."
    )
    output_burndown: float = _f(0.0, "Quota tokens per output token; 0: the catalogue's figure.")


@dataclass(frozen=True, slots=True)
class RetrySection:
    max_attempts: int = _f(8, "Attempts per row, across all routes, before it becomes an error row.")
    backoff_initial_s: float = _f(0.5, "First backoff; doubles each attempt, full jitter.")
    backoff_max_s: float = _f(30.0, "Longest backoff between two attempts.")
    timeout_s: float = _f(600.0, "Deadline of one InvokeModel call.")
    model_error_attempts: int = _f(2, "Attempts for ModelErrorException (424), which rarely heals.")


@dataclass(frozen=True, slots=True)
class OutputSection:
    part_rows: int = _f(2000, "Commit a part file after this many results...")
    part_seconds: float = _f(10.0, "...or after this many seconds, whichever comes first.")
    read_batch_rows: int = _f(1024, "Rows read from the input per Parquet record batch.")
    log_prompts: bool = _f(False, "Allow prompt and completion text in logs (off: redacted).")
    prices: str = _f(
        "", "TOML price table replacing the built-in one (runner/prices.toml); relative to the spec file."
    )
    s3_uri: str = _f("", "Also upload results.parquet under this s3:// prefix after each run.")


@dataclass(frozen=True, slots=True)
class BatchSection:
    role_arn: str = _f("", "IAM role Bedrock batch inference assumes to read and write S3.")
    s3_uri: str = _f("", "s3:// prefix where shards are uploaded and results written.")
    min_records: int = _f(100, "Fewest records Bedrock accepts per batch job; smaller rests run on-demand.")
    max_records: int = _f(50_000, "Most records per batch job (one shard).")
    max_shard_bytes: int = _f(1_000_000_000, "Largest shard file.")
    timeout_hours: int = _f(24, "timeoutDurationInHours of each batch job (24 to 168).")
    poll_initial_s: float = _f(5.0, "First wait between status polls; grows to poll_max_s.")
    poll_max_s: float = _f(300.0, "Longest wait between status polls.")


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A validated job. ``source`` is the file it came from (for messages), not part of the job."""

    job: JobSection
    model: ModelSection
    columns: ColumnsSection = ColumnsSection()
    request: RequestSection = RequestSection()
    limits: LimitsSection = LimitsSection()
    retry: RetrySection = RetrySection()
    output: OutputSection = OutputSection()
    batch: BatchSection = BatchSection()
    source: str = field(default="<spec>", compare=False, metadata={"internal": True})

    @property
    def name(self) -> str:
        return self.job.name or Path(self.source).stem

    @property
    def region(self) -> str:
        """The first of ``[model] regions``, else ``[model] region`` (or ``--region``), else
        ``AWS_REGION``, ``AWS_DEFAULT_REGION``, the profile's region, us-east-1
        (:func:`runner.awsconfig.resolve_region`)."""
        if self.model.regions:
            return self.model.regions[0]
        return self.region_setting.value

    @property
    def region_setting(self) -> Setting:
        """The home region and where it came from."""
        if self.model.regions:
            return resolve_region(self.model.regions[0], source="[model] regions")
        return resolve_region(self.model.region, source="[model] region or --region")

    @property
    def regions(self) -> list[str]:
        """The source regions: ``[model] regions``, else the one home region."""
        return list(dict.fromkeys(self.model.regions)) or [self.region]

    def tpm_for(self, route_name: str, region: str) -> int:
        """The quota ``[limits] tpm`` gives a route: its own entry, its region's, the number, or 0."""
        tpm = self.limits.tpm
        if isinstance(tpm, int):
            return tpm
        return tpm.get(route_name, tpm.get(region, 0))

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (what the job directory freezes), without ``source``."""
        d = dataclasses.asdict(self)
        d.pop("source")
        return d

    def request_digest(self) -> str:
        """Hash of everything that shapes a request body apart from the row: part of each resume key.

        Changing the model, template, system prompt or parameters changes it, so rows run again;
        changing limits, retries, routes or output settings does not.
        """
        payload: dict[str, Any] = {"model": self.model.id, "columns": dataclasses.asdict(self.columns)}
        payload["request"] = dataclasses.asdict(self.request)
        payload["columns"].pop("keep")
        return hashlib.blake2b(json.dumps(payload, sort_keys=True).encode(), digest_size=16).hexdigest()


_SECTIONS: dict[str, type[Any]] = {
    f.name: f.type if isinstance(f.type, type) else typing.get_type_hints(JobSpec)[f.name]
    for f in dataclasses.fields(JobSpec)
    if not f.metadata.get("internal")
}


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> JobSpec:
    """Read, merge CLI overrides into, and validate a TOML job spec.

    ``overrides`` maps dotted keys (``"job.input"``, ``"limits.max_in_flight"``) to values; ``None``
    values are ignored so callers can pass every flag as it came.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{path}: no such job spec file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the job spec ({exc.strerror})") from None
    _resolve_paths(raw, path.parent)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        raw.setdefault(section, {})[key] = value
    return spec_from_dict(raw, source=str(path))


SPEC_PATHS: tuple[tuple[str, str], ...] = (("job", "input"), ("job", "output"), ("output", "prices"))
"""Keys whose local paths are relative to the spec file's directory (not to the working directory), so
a spec means the same files wherever it is run from. CLI flags (``--input``, ``--output``) stay
relative to the working directory, as flags are."""


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Make the :data:`SPEC_PATHS` of a freshly read spec absolute, against ``base``; ``s3://`` (any
    ``scheme://``) is left alone, and so is a value of the wrong type (validation names it)."""
    for section, key in SPEC_PATHS:
        table = raw.get(section)
        value = table.get(key) if isinstance(table, dict) else None
        if isinstance(value, str) and value and "://" not in value:
            assert isinstance(table, dict)
            table[key] = os.path.normpath(os.path.join(base.absolute(), os.path.expanduser(value)))


def spec_from_dict(raw: dict[str, Any], *, source: str = "<spec>") -> JobSpec:
    """Validate plain data into a :class:`JobSpec`; errors are ``SpecError`` naming ``source`` and key."""
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise SpecError(f"{source}: unknown section [{unknown[0]}] (known: {', '.join(_SECTIONS)})")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        value = raw.get(name, {})
        if not isinstance(value, dict):
            raise SpecError(f"{source}: [{name}] must be a table")
        sections[name] = _section(cls, value, name, source)
    spec = JobSpec(**sections, source=source)
    if spec.model.catalog or os.environ.get(catalog.CATALOG_ENV):
        catalog.activate(spec.model.catalog or None)  # the models and geographies _check knows
    _check(spec)
    return spec


def _section(cls: type[Any], raw: dict[str, Any], name: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            raise SpecError(f"{source}: [{name}] unknown key `{key}` (known: {', '.join(known)})")
    values: dict[str, Any] = {}
    for key, f in known.items():
        if key not in raw:
            if f.metadata.get("required"):
                raise SpecError(f"{source}: [{name}] `{key}` is required ({f.metadata['help']})")
            continue
        values[key] = _coerce(raw[key], hints[key], f"[{name}] `{key}`", source)
        if f.metadata.get("required") and values[key] in ("", None):
            raise SpecError(f"{source}: [{name}] `{key}` must not be empty")
    return cls(**values)


def _coerce(value: Any, hint: Any, where: str, source: str) -> Any:
    """Check ``value`` against a field's type; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        for arm in arms[:-1]:
            try:
                return _coerce(value, arm, where, source)
            except SpecError:
                continue
        return _coerce(value, arms[-1], where, source)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise SpecError(f"{source}: {where} must be one of {choices}, not {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise SpecError(f"{source}: {where} must be a list, not {type(value).__name__}")
        return [_coerce(v, args[0], where, source) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(f"{source}: {where} must be a table, not {type(value).__name__}")
        if args[1] is Any:
            _finite_everywhere(value, where, source)
            return dict(value)
        return {k: _coerce(v, args[1], where, source) for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{source}: {where} must be a finite number, not {value!r}")
    if hint is Any or (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        return value
    raise SpecError(f"{source}: {where} must be {_type_name(hint)}, not {type(value).__name__} {value!r}")


def _finite_everywhere(value: Any, where: str, source: str) -> None:
    """Refuse NaN and infinities anywhere in a free-form value (``[request] extra``): JSON cannot carry
    them, so every request would fail."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{source}: {where} holds {value!r}; numbers must be finite")
    if isinstance(value, dict):
        for v in value.values():
            _finite_everywhere(v, where, source)
    elif isinstance(value, list):
        for v in value:
            _finite_everywhere(v, where, source)


def _type_name(hint: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(hint, str(hint))


def _check(spec: JobSpec) -> None:
    """Cross-field rules: what a type cannot say."""
    src = spec.source
    try:
        model, pinned = catalog.find_model(spec.model.id)
    except catalog.UnknownModelError:
        known = ", ".join(m.base_id for m in catalog.models()[:3])
        raise SpecError(
            f"{src}: [model] `id` {spec.model.id!r} is not a Claude model on Bedrock "
            f"(e.g. {known}; `bedrock-batch models` lists them; a newer model or an application "
            "profile ARN goes in a catalogue file, [model] catalog)"
        ) from None
    geographies = catalog.geographies()
    for key, region in [("region", spec.model.region)] + [("regions", r) for r in spec.model.regions]:
        if not region:
            continue
        try:
            catalog.check_region(region)
        except catalog.UnknownRegionError as exc:
            raise SpecError(f"{src}: [model] `{key}` {exc}") from None
    for geo in spec.model.endpoints:
        if geo not in geographies:
            raise SpecError(f"{src}: [model] `endpoints` has {geo!r}; use {', '.join(geographies)}")
    if spec.model.residency:
        if spec.model.residency not in geographies or spec.model.residency == "global":
            choices = ", ".join(g for g in geographies if g != "global")
            raise SpecError(
                f"{src}: [model] `residency` must be one of {choices}, not {spec.model.residency!r}"
            )
        if pinned and pinned != spec.model.residency:
            raise SpecError(
                f"{src}: [model] `id` pins geography {pinned!r} but `residency` is {spec.model.residency!r}"
            )
    cols = spec.columns
    given = [k for k in ("prompt", "messages", "template") if getattr(cols, k)]
    if not given and not cols.document:
        raise SpecError(f"{src}: [columns] needs one of `prompt`, `messages` or `template`")
    if cols.messages and (cols.prompt or cols.template):
        raise SpecError(f"{src}: [columns] `messages` cannot be combined with `prompt` or `template`")
    if cols.prompt and cols.template:
        raise SpecError(f"{src}: [columns] use `prompt` or `template`, not both")
    _check_keep(src, cols.keep)
    req = spec.request
    extra_betas = req.extra.get("anthropic_beta")
    betas = [*req.anthropic_beta, *(extra_betas if isinstance(extra_betas, list) else [])]
    for beta in betas:
        if isinstance(beta, str) and beta.startswith("context-1m") and beta != model.long_context_beta:
            has = (
                f"its long-context flag is {model.long_context_beta!r}"
                if model.long_context_beta
                else f"its window is {model.context_window:,} tokens"
            )
            raise SpecError(
                f"{src}: [request] `anthropic_beta` {beta!r} asks for a 1M-token context window, which "
                f"{model.name} does not have ({has}); Bedrock would refuse every row"
            )
    _check_request(src, spec.request, model)
    allowed_overrides = {"max_tokens", "temperature", "top_p", "top_k"}
    for key in cols.overrides:
        if key not in allowed_overrides:
            allowed = ", ".join(sorted(allowed_overrides))
            raise SpecError(f"{src}: [columns] `overrides` key {key!r} is not one of {allowed}")
    lim = spec.limits
    _positive(src, "[limits] `max_in_flight`", lim.max_in_flight)
    if lim.max_in_flight > MAX_IN_FLIGHT:
        raise SpecError(
            f"{src}: [limits] `max_in_flight` must be at most {MAX_IN_FLIGHT}, not {lim.max_in_flight} "
            "(each request in flight holds a worker and a connection; `tpm` paces the quota)"
        )
    for key, tpm in lim.tpm.items() if isinstance(lim.tpm, dict) else [("", lim.tpm)]:
        _non_negative(src, f"[limits] `tpm`{f' {key!r}' if key else ''}", tpm)
    if spec.model.region and spec.model.regions and spec.model.region not in spec.model.regions:
        raise SpecError(
            f"{src}: [model] `region` {spec.model.region!r} is not one of `regions`; give one or the other"
        )
    if spec.model.residency:
        for region in spec.model.regions:  # the listed ones; a lone home region is routing's call
            if spec.model.residency not in catalog.region_geographies(region):
                raise SpecError(
                    f"{src}: [model] region {region!r} is outside `residency` {spec.model.residency!r}"
                )
    _non_negative(src, "[limits] `max_cost_usd`", lim.max_cost_usd)
    _non_negative(src, "[limits] `output_burndown`", lim.output_burndown)
    _positive(src, "[retry] `max_attempts`", spec.retry.max_attempts)
    _positive(src, "[retry] `timeout_s`", spec.retry.timeout_s)
    _positive(src, "[retry] `model_error_attempts`", spec.retry.model_error_attempts)
    if spec.retry.backoff_initial_s < 0 or spec.retry.backoff_max_s < spec.retry.backoff_initial_s:
        raise SpecError(f"{src}: [retry] need 0 <= `backoff_initial_s` <= `backoff_max_s`")
    _positive(src, "[output] `part_rows`", spec.output.part_rows)
    _positive(src, "[output] `part_seconds`", spec.output.part_seconds)
    _positive(src, "[output] `read_batch_rows`", spec.output.read_batch_rows)
    if spec.job.output.startswith("s3://"):
        raise SpecError(
            f"{src}: [job] `output` is the local job directory (resume state lives there); "
            "set [output] `s3_uri` to also upload results.parquet to S3"
        )
    if spec.output.s3_uri and not spec.output.s3_uri.startswith("s3://"):
        raise SpecError(f"{src}: [output] `s3_uri` must start with s3://, not {spec.output.s3_uri!r}")
    b = spec.batch
    if spec.job.mode == "batch" and not (b.role_arn and b.s3_uri.startswith("s3://")):
        raise SpecError(f"{src}: [job] mode = 'batch' needs [batch] `role_arn` and an s3:// `s3_uri`")
    if not 24 <= b.timeout_hours <= 168:
        raise SpecError(f"{src}: [batch] `timeout_hours` must be between 24 and 168, not {b.timeout_hours}")
    if not 1 <= b.min_records <= b.max_records:
        raise SpecError(f"{src}: [batch] need 1 <= `min_records` <= `max_records`")
    _positive(src, "[batch] `max_shard_bytes`", b.max_shard_bytes)
    if b.poll_initial_s <= 0 or b.poll_max_s < b.poll_initial_s:
        raise SpecError(f"{src}: [batch] need 0 < `poll_initial_s` <= `poll_max_s`")


def _check_keep(src: str, keep: list[str]) -> None:
    """Kept columns land beside the result columns: no name may collide with one, or come twice.

    The result columns come from ``runner.schemas`` (pyarrow), imported only when there is a ``keep``
    to check: loading a spec for ``--help`` or ``status`` must not load Arrow."""
    if not keep:
        return
    from runner.schemas import INDEX_COLUMN, RESULT_COLUMNS

    result_names = {*(c.name for c in RESULT_COLUMNS), INDEX_COLUMN}
    seen: set[str] = set()
    for name in keep:
        if name in result_names:
            raise SpecError(
                f"{src}: [columns] `keep` has {name!r}, which results.parquet already uses for its own "
                "column; rename that input column (or drop it from `keep`)"
            )
        if name in seen:
            raise SpecError(f"{src}: [columns] `keep` names {name!r} twice")
        seen.add(name)


def _check_request(src: str, req: RequestSection, model: catalog.Model) -> None:
    """The request parameters, checked as Bedrock would check every body: a bad one fails every row."""
    if not 1 <= req.max_tokens <= model.max_output_tokens:
        raise SpecError(
            f"{src}: [request] `max_tokens` must be between 1 and {model.max_output_tokens} "
            f"for {model.name}, not {req.max_tokens}"
        )
    for name in ("temperature", "top_p"):
        value = getattr(req, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise SpecError(f"{src}: [request] `{name}` must be between 0 and 1, not {value}")
    if req.top_k is not None and req.top_k < 0:
        raise SpecError(f"{src}: [request] `top_k` must not be negative, not {req.top_k}")
    if model.exclusive_sampling and req.temperature is not None and req.top_p is not None:
        raise SpecError(f"{src}: [request] {model.name} accepts `temperature` or `top_p`, not both")
    for i, stop in enumerate(req.stop_sequences):
        if not stop.strip():
            raise SpecError(
                f"{src}: [request] `stop_sequences` item {i} is empty or whitespace; Bedrock refuses it"
            )
    for i, beta in enumerate(req.anthropic_beta):
        if not beta.strip():
            raise SpecError(f"{src}: [request] `anthropic_beta` item {i} is empty")
    for key in req.extra:
        if key in EXTRA_KEYS:
            continue
        if key in ("anthropic_version", "messages", "max_tokens", "system"):
            raise SpecError(f"{src}: [request] `extra` must not set {key!r}; the runner builds it")
        if key in _REQUEST_KEYS:
            raise SpecError(f"{src}: [request] `extra` must not set {key!r}; use [request] `{key}`")
        raise SpecError(
            f"{src}: [request] `extra` key {key!r} is not a body key Bedrock accepts for Claude "
            f"(`extra` may set {', '.join(EXTRA_KEYS)}; the model is [model] `id`)"
        )
    _check_extra(src, req)


_REQUEST_KEYS = ("temperature", "top_p", "top_k", "stop_sequences", "anthropic_beta")


def _check_extra(src: str, req: RequestSection) -> None:
    """The shape of ``tools``, ``tool_choice``, ``thinking`` and ``metadata`` in ``[request] extra``."""
    where = f"{src}: [request] `extra`"
    extra = req.extra
    tools = extra.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise SpecError(f"{where} `tools` must be a list of tables, not {type(tools).__name__}")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"]:
                raise SpecError(f"{where} `tools` item {i} needs a `name` (a table with name, input_schema)")
    choice = extra.get("tool_choice")
    if choice is not None:
        if tools is None:
            raise SpecError(f"{where} sets `tool_choice` without `tools`")
        if not isinstance(choice, dict) or choice.get("type") not in TOOL_CHOICE_TYPES:
            kinds = ", ".join(TOOL_CHOICE_TYPES)
            raise SpecError(f"{where} `tool_choice` must be a table whose `type` is one of {kinds}")
        if choice["type"] == "tool" and not isinstance(choice.get("name"), str):
            raise SpecError(f"{where} `tool_choice` of type 'tool' needs the tool's `name`")
    thinking = extra.get("thinking")
    if thinking is not None:
        if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled"):
            raise SpecError(f"{where} `thinking` must be a table whose `type` is 'enabled' or 'disabled'")
        if thinking["type"] == "enabled":
            budget = thinking.get("budget_tokens")
            if isinstance(budget, bool) or not isinstance(budget, int) or budget < THINKING_MIN_BUDGET:
                raise SpecError(
                    f"{where} `thinking.budget_tokens` must be an integer of at least {THINKING_MIN_BUDGET}"
                )
            if budget >= req.max_tokens:
                raise SpecError(
                    f"{where} `thinking.budget_tokens` ({budget}) must be less than [request] "
                    f"`max_tokens` ({req.max_tokens})"
                )
            if req.temperature is not None and req.temperature != 1.0:
                raise SpecError(f"{src}: [request] `temperature` may only be 1 with thinking enabled")
    metadata = extra.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise SpecError(f"{where} `metadata` must be a table, not {type(metadata).__name__}")


def _positive(src: str, where: str, value: float) -> None:
    if value <= 0:
        raise SpecError(f"{src}: {where} must be greater than 0, not {value}")


def _non_negative(src: str, where: str, value: float) -> None:
    if value < 0:
        raise SpecError(f"{src}: {where} must not be negative, not {value}")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of job spec files, derived from the dataclasses (see ``schemas/``)."""
    props: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        section: dict[str, Any] = {
            "type": "object",
            "additionalProperties": False,
            "properties": {f.name: _schema_of(hints[f.name], f) for f in fields},
        }
        required = [f.name for f in fields if f.metadata.get("required")]
        if required:
            section["required"] = required
        props[name] = section
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "bedrock-batch job spec",
        "type": "object",
        "additionalProperties": False,
        "required": ["job", "model"],
        "properties": props,
    }


def _schema_of(hint: Any, f: dataclasses.Field[Any]) -> dict[str, Any]:
    out = _json_type(hint)
    out["description"] = f.metadata["help"]
    if f.default is not dataclasses.MISSING and f.default is not None:
        out["default"] = f.default
    elif f.default_factory is not dataclasses.MISSING:
        out["default"] = f.default_factory()
    return out


def _json_type(hint: Any) -> dict[str, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        arms = [a for a in args if a is not type(None)]
        if len(arms) > 1:  # e.g. an integer or a table of integers: one schema with both types
            merged: dict[str, Any] = {"type": []}
            for arm in arms:
                part = _json_type(arm)
                merged["type"].append(part.pop("type"))
                merged.update(part)
            return merged
        return {"type": [_json_type(arms[0])["type"], "null"]}
    if origin is Literal:
        return {"type": "string", "enum": list(args)}
    if origin is list:
        return {"type": "array", "items": _json_type(args[0])}
    if origin is dict:
        return (
            {"type": "object"}
            if args[1] is Any
            else {"type": "object", "additionalProperties": _json_type(args[1])}
        )
    names = {int: "integer", float: "number", str: "string", bool: "boolean"}
    return {"type": names[hint]}


def resolve_spec(
    spec: JobSpec,
    *,
    input: str | None = None,
    output: str | None = None,
    endpoint_url: str | None = None,
    max_in_flight: int | None = None,
    mode: str | None = None,
    region: str | None = None,
) -> JobSpec:
    """Apply CLI overrides to a loaded spec (re-validated, so a bad flag is a ``SpecError`` too).

    ``region`` may list several source regions, comma-separated (``us-east-1,us-west-2``): they
    replace ``[model] regions`` (and the home region is the first).
    """
    raw = spec.to_dict()
    if region is not None:
        listed = [r.strip() for r in region.split(",") if r.strip()]
        raw["model"]["regions"] = listed if len(listed) > 1 else []
        region = listed[0] if listed else region
    for dotted, value in (
        ("job.input", input),
        ("job.output", output),
        ("model.endpoint_url", endpoint_url),
        ("limits.max_in_flight", max_in_flight),
        ("job.mode", mode),
        ("model.region", region),
    ):
        if value is not None:
            section, _, key = dotted.partition(".")
            raw[section][key] = value
    return spec_from_dict(raw, source=spec.source)
