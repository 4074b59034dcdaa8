"""Fault and quota configuration: what the emulator does wrong, per route, and how to say it.

One structure three ways: the TOML fault file, the JSON of ``/_emulator/faults``, and the CLI flags
all become an :class:`EmulatorConfig`, validated here once, so the hot path never checks a setting.
A route is an inference profile called from a region; ``[defaults]`` applies to every route and each
matching ``[[routes]]`` entry (glob on profile and region) overrides it, later entries winning::

    seed = 7
    [defaults]
    latency = {dist = "lognormal", median_ms = 800, sigma = 0.4}
    per_output_token_ms = 2
    output_tokens = {min = 20, max = 60}

    [[routes]]
    profile = "global.*"
    access_denied = true

    [[routes]]
    profile = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    region = "us-east-1"
    tpm = 200000
    quota_shape = "bucket"                  # the quota's shape and scenario: see docs/emulator.md
    quota_start = "empty"
    other_consumer = {share = 0.5, pattern = "bursty", period_s = 20}
    tpm_changes = [{at_s = 30, tpm = 400000}]
    outages = [{start_s = 10, end_s = 40}]

    [batch]                                 # batch inference jobs: see BatchSettings
    s3_endpoint_url = "http://127.0.0.1:9000"
    duration_s = 1.0
    record_errors = ["00000000003"]

Errors are :class:`ConfigError` with the key path in the message (``routes[1].tpm: ...``) because
the person reading them is editing a file.
"""

from __future__ import annotations

import fnmatch
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeAlias

from runner.emulator.errors import ERRORS

Json: TypeAlias = dict[str, Any]


class ConfigError(ValueError):
    """A fault file, admin payload or flag the emulator cannot use; the message names the key."""


# --- values ----------------------------------------------------------------------------------------

LatencyDist: TypeAlias = Literal["fixed", "lognormal", "uniform"]


@dataclass(frozen=True, slots=True)
class Latency:
    """Base time to answer, before the per-output-token time.

    ``fixed`` waits ``ms``; ``lognormal`` draws around ``median_ms`` with shape ``sigma`` (the usual
    model of service latency: a long right tail), capped at ``max_ms`` when set; ``uniform`` draws
    in ``[min_ms, max_ms]``.
    """

    dist: LatencyDist = "fixed"
    ms: float = 0.0
    median_ms: float = 0.0
    sigma: float = 0.0
    min_ms: float = 0.0
    max_ms: float | None = None

    @property
    def is_zero(self) -> bool:
        return self.dist == "fixed" and self.ms == 0.0

    def sample(self, u1: float, u2: float) -> float:
        """Milliseconds for two uniforms in (0, 1]: pure, so a seeded request always waits the same."""
        if self.dist == "fixed":
            return self.ms
        if self.dist == "uniform":
            high = self.min_ms if self.max_ms is None else self.max_ms
            return self.min_ms + (high - self.min_ms) * u1
        z = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)  # Box-Muller
        value = self.median_ms * math.exp(self.sigma * z)
        return value if self.max_ms is None else min(value, self.max_ms)

    def to_dict(self) -> Json:
        if self.dist == "fixed":
            return {"dist": "fixed", "ms": self.ms}
        if self.dist == "uniform":
            return {"dist": "uniform", "min_ms": self.min_ms, "max_ms": self.max_ms}
        out: Json = {"dist": "lognormal", "median_ms": self.median_ms, "sigma": self.sigma}
        if self.max_ms is not None:
            out["max_ms"] = self.max_ms
        return out


@dataclass(frozen=True, slots=True)
class OutputTokens:
    """How long answers are: drawn in ``[min, max]`` per request (deterministically), capped by max_tokens."""

    min: int = 20
    max: int = 60

    def pick(self, u: float) -> int:
        return self.min + min(int(u * (self.max - self.min + 1)), self.max - self.min)

    def to_json(self) -> int | Json:
        return self.min if self.min == self.max else {"min": self.min, "max": self.max}


OutageSince: TypeAlias = Literal["set", "start"]


@dataclass(frozen=True, slots=True)
class Outage:
    """The route answers ``error`` during ``[start_s, end_s)`` seconds after ``since``.

    ``since = "set"`` (the default) counts from the moment the faults were last set (emulator start,
    ``PUT`` or ``PATCH``), so a test can declare "down for the next two seconds"; ``"start"`` counts
    from emulator start (or the last reset), for scenario files that describe a whole run.
    """

    start_s: float
    end_s: float
    error: str = "ServiceUnavailableException"
    since: OutageSince = "set"

    def to_dict(self) -> Json:
        return {"start_s": self.start_s, "end_s": self.end_s, "error": self.error, "since": self.since}


QuotaShapeName: TypeAlias = Literal["window", "bucket", "fixed"]
QUOTA_SHAPES: tuple[QuotaShapeName, ...] = ("window", "bucket", "fixed")
MINUTE_S = 60.0
"""A quota's period (``quota.WINDOW_S``), and the longest ``quota_reset_s``: a fixed window's first
minute ends within a minute of the quota's creation."""
ConsumerPattern: TypeAlias = Literal["steady", "bursty"]
MIN_CONSUMER_PERIOD_S = 0.1


@dataclass(frozen=True, slots=True)
class OtherConsumer:
    """Traffic the runner cannot see, drawing ``share`` of a route's quota from the quota's creation on.

    ``steady`` draws ``share x tpm / 60`` tokens a second, continuously (in 0.1 s steps); ``bursty``
    draws ``share x tpm x period_s / 60`` at once every ``period_s`` seconds, the first burst when the
    quota is created. It is subject to the quota itself: it takes what is left, never more, and what it
    could not take is dropped, not queued.
    """

    share: float = 0.5
    pattern: ConsumerPattern = "steady"
    period_s: float = 20.0

    def to_dict(self) -> Json:
        return {"share": self.share, "pattern": self.pattern, "period_s": self.period_s}


@dataclass(frozen=True, slots=True)
class TpmChange:
    """The route's quota becomes ``tpm`` ``at_s`` seconds after the quota was created."""

    at_s: float
    tpm: int

    def to_dict(self) -> Json:
        return {"at_s": self.at_s, "tpm": self.tpm}


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """Everything that can go wrong on one route, resolved (defaults plus matching rules)."""

    latency: Latency = Latency()
    per_output_token_ms: float = 0.0
    throttle_rate: float = 0.0
    tpm: int | None = None
    """Tokens-per-minute quota of the route; ``None`` is unlimited."""
    output_burndown: float | None = None
    """Quota tokens per output token; ``None`` takes the catalogue's figure for the model."""
    quota_shape: QuotaShapeName = "window"
    """How the quota refills: a rolling 60 s ``window``, a continuously refilled ``bucket``, or a
    ``fixed`` window (a counter per minute, reset at each minute boundary)."""
    quota_reset_s: float = MINUTE_S
    """A ``fixed`` window's first reset, in seconds after the quota's creation (then one every 60 s);
    in (0, 60]. The other shapes ignore it."""
    quota_start: float = 1.0
    """Share of the quota available when the route's quota is created (``"full"`` 1, ``"empty"`` 0)."""
    other_consumer: OtherConsumer | None = None
    """Traffic the runner cannot see, drawing on the same quota."""
    tpm_changes: tuple[TpmChange, ...] = ()
    """The quota raised or cut mid-run, in seconds since the route's quota was created."""
    error_rate: float = 0.0
    error_type: str = "InternalServerException"
    outages: tuple[Outage, ...] = ()
    access_denied: bool = False
    cut_off_rate: float = 0.0
    slow_rate: float = 0.0
    slow_ms: float = 30_000.0
    output_tokens: OutputTokens = OutputTokens()

    @property
    def random_faults(self) -> bool:
        """Whether any per-request draw can fail the call (lets the hot path skip them all at once)."""
        return bool(self.throttle_rate or self.error_rate or self.cut_off_rate or self.slow_rate)

    def to_dict(self) -> Json:
        """The JSON / TOML form; unset optional values (``tpm``, ``output_burndown``) are left out."""
        values = ((name, getattr(self, name)) for name in _FIELD_NAMES)
        return {name: _dump_field(name, value) for name, value in values if value is not None}


_FIELD_NAMES = tuple(f.name for f in fields(FaultSettings))


@dataclass(frozen=True, slots=True)
class RouteRule:
    """Overrides for the routes whose profile and region match the globs."""

    profile: str = "*"
    region: str = "*"
    overrides: tuple[tuple[str, Any], ...] = ()

    def matches(self, profile: str, region: str) -> bool:
        return fnmatch.fnmatchcase(profile, self.profile) and fnmatch.fnmatchcase(region, self.region)

    def to_dict(self) -> Json:
        out: Json = {"profile": self.profile, "region": self.region}
        for name, value in self.overrides:
            if value is not None:
                out[name] = _dump_field(name, value)
            elif name == "tpm":
                out[name] = 0
            elif name == "other_consumer":
                out[name] = {"share": 0.0}
        return out


BATCH_END_STATUSES = ("Completed", "PartiallyCompleted", "Failed", "Expired")


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """Batch inference jobs: where their S3 lives, how long they take, and what goes wrong in them.

    Without ``s3_endpoint_url`` jobs are accepted, counted and stay ``Submitted`` (nothing to read
    from). With it, each job waits ``submitted_s`` (``Submitted``), runs for ``duration_s``
    (``InProgress``), reads its JSONL input from that S3 server, answers every record as InvokeModel
    would, writes ``{output}/{job id}/{input file}.out`` and ``manifest.json.out``, and ends in
    ``end_status``. Records whose ``recordId`` is in ``record_errors``, and a seeded
    ``record_error_rate`` share of the rest, get an ``error`` entry instead of a ``modelOutput``.
    ``end_status = "Failed"`` writes nothing; ``"Expired"`` and ``"PartiallyCompleted"`` answer only
    the first half of the records, as a job that ran out of time would. ``max_jobs`` is the account's
    quota of jobs in progress at once: a create beyond it is ``ServiceQuotaExceededException``.
    """

    s3_endpoint_url: str = ""
    submitted_s: float = 0.2
    duration_s: float = 2.0
    record_error_rate: float = 0.0
    record_errors: tuple[str, ...] = ()
    record_error_code: int = 500
    end_status: str = "Completed"
    max_jobs: int = 0
    """Jobs in progress at once before creates are refused; 0: no limit."""

    def to_dict(self) -> Json:
        out: Json = {f.name: getattr(self, f.name) for f in fields(self)}
        out["record_errors"] = list(self.record_errors)
        return out


def _batch_settings(table: Any, base: BatchSettings, where: str = "batch") -> BatchSettings:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table")
    values: dict[str, Any] = {}
    for key, value in table.items():
        at = f"{where}.{key}"
        if key == "s3_endpoint_url":
            if not isinstance(value, str) or (value and not value.startswith(("http://", "https://"))):
                raise ConfigError(f"{at}: must be an http:// or https:// URL (or empty)")
            values[key] = value
        elif key in ("submitted_s", "duration_s"):
            values[key] = _number(value, at)
        elif key == "record_error_rate":
            values[key] = _rate(value, at)
        elif key == "record_errors":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{at}: must be a list of recordId strings")
            values[key] = tuple(value)
        elif key == "record_error_code":
            values[key] = _int(value, at, low=400)
        elif key == "max_jobs":
            values[key] = _int(value, at)
        elif key == "end_status":
            if value not in BATCH_END_STATUSES:
                raise ConfigError(f"{at}: must be one of {', '.join(BATCH_END_STATUSES)}, got {value!r}")
            values[key] = value
        else:
            known = ", ".join(f.name for f in fields(BatchSettings))
            raise ConfigError(f"{where}: unknown key {key!r} (known: {known})")
    return replace(base, **values)


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """The emulator's whole configuration: seed, prompt-cache behaviour and the fault rules."""

    seed: int = 0
    defaults: FaultSettings = field(default_factory=FaultSettings)
    routes: tuple[RouteRule, ...] = ()
    cache_ttl_s: float = 300.0
    """How long a cached prompt prefix lives (``cache_control.ttl = "1h"`` asks for an hour)."""
    cache_min_tokens: int = 0
    """Prefixes shorter than this are not cached (Claude's minimum is 1024-4096; 0 keeps tests simple)."""
    batch: BatchSettings = field(default_factory=BatchSettings)
    """Batch inference jobs (``[batch]``): S3 endpoint, timing, record faults."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmulatorConfig:
        """Validate the JSON / TOML structure documented in ``docs/emulator.md``."""
        return cls().merged(data, replace_routes=True)

    @classmethod
    def from_toml(cls, path: str | Path) -> EmulatorConfig:
        """Read a fault file; errors name the file and the key."""
        path = Path(path)
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    def merged(self, patch: Mapping[str, Any], *, replace_routes: bool = False) -> EmulatorConfig:
        """This config with ``patch`` applied (the ``PATCH /_emulator/faults`` semantics).

        Top-level keys replace, ``defaults`` keys replace one by one, and each patch route replaces the
        settings it names in the rule with the same ``profile`` and ``region`` (or is appended).
        ``replace_routes`` drops the existing rules first (``PUT``).
        """
        if not isinstance(patch, Mapping):
            raise ConfigError("the fault configuration must be a table / JSON object")
        unknown = set(patch) - {"seed", "defaults", "routes", "cache_ttl_s", "cache_min_tokens", "batch"}
        if unknown:
            raise ConfigError(
                f"unknown key {sorted(unknown)[0]!r} (expected seed, cache_ttl_s, cache_min_tokens, "
                "[defaults], [[routes]] or [batch])"
            )
        batch = _batch_settings(patch["batch"], self.batch) if "batch" in patch else self.batch
        seed = _int(patch["seed"], "seed", low=None) if "seed" in patch else self.seed
        ttl = _number(patch["cache_ttl_s"], "cache_ttl_s") if "cache_ttl_s" in patch else self.cache_ttl_s
        min_tokens = (
            _int(patch["cache_min_tokens"], "cache_min_tokens")
            if "cache_min_tokens" in patch
            else self.cache_min_tokens
        )
        defaults = self.defaults
        if "defaults" in patch:
            table = patch["defaults"]
            if not isinstance(table, Mapping):
                raise ConfigError("defaults: must be a table")
            defaults = replace(defaults, **dict(_parse_settings(table, "defaults")))
        routes = [] if replace_routes else list(self.routes)
        if "routes" in patch:
            entries = patch["routes"]
            if not isinstance(entries, list):
                raise ConfigError("routes: must be an array of tables ([[routes]])")
            for i, entry in enumerate(entries):
                rule = _parse_rule(entry, f"routes[{i}]")
                for j, old in enumerate(routes):
                    if (old.profile, old.region) == (rule.profile, rule.region):
                        merged = dict(old.overrides) | dict(rule.overrides)
                        routes[j] = replace(old, overrides=tuple(merged.items()))
                        break
                else:
                    routes.append(rule)
        return EmulatorConfig(
            seed=seed,
            defaults=defaults,
            routes=tuple(routes),
            cache_ttl_s=ttl,
            cache_min_tokens=min_tokens,
            batch=batch,
        )

    def settings_for(self, profile: str, region: str) -> FaultSettings:
        """The defaults with every matching rule applied in order (later rules win)."""
        settings = self.defaults
        for rule in self.routes:
            if rule.matches(profile, region):
                settings = replace(settings, **dict(rule.overrides))
        return settings

    def to_dict(self) -> Json:
        """The JSON form (``GET /_emulator/faults``); ``from_dict`` of it gives this config back."""
        return {
            "seed": self.seed,
            "cache_ttl_s": self.cache_ttl_s,
            "cache_min_tokens": self.cache_min_tokens,
            "defaults": self.defaults.to_dict(),
            "routes": [r.to_dict() for r in self.routes],
            "batch": self.batch.to_dict(),
        }


# --- scripted outcomes -----------------------------------------------------------------------------

ScriptKind: TypeAlias = Literal["ok", "error", "cut_off", "slow", "body"]
_SIMPLE_KINDS: dict[str, ScriptKind] = {"ok": "ok", "cut_off": "cut_off", "slow": "slow"}


@dataclass(frozen=True, slots=True)
class ScriptedOutcome:
    """What the next call of a route answers, regardless of the random faults (``POST /_emulator/script``).

    ``ok`` answers normally (body still validated, random faults and the quota skipped), optionally
    after ``latency_ms`` and with exactly ``output_tokens``; ``error`` answers the named exception;
    ``cut_off`` sends half the body; ``slow`` answers after ``slow_ms`` (or the route's ``slow_ms``);
    ``body`` answers 200 with ``body`` (any JSON) instead of a Messages response (``"not_messages"``
    is ``{"body": {}}``).
    """

    kind: ScriptKind
    error: str | None = None
    message: str | None = None
    latency_ms: float | None = None
    output_tokens: int | None = None
    slow_ms: float | None = None
    body: Any = None

    @classmethod
    def parse(cls, item: Any, where: str = "outcome") -> ScriptedOutcome:
        """Read one entry of the ``outcomes`` list: a name or a small object."""
        if isinstance(item, str):
            if item in _SIMPLE_KINDS:
                return cls(_SIMPLE_KINDS[item])
            if item == "not_messages":
                return cls("body", body={})
            if item in ERRORS:
                return cls("error", error=item)
            raise ConfigError(
                f"{where}: {item!r} is not 'ok', 'cut_off', 'slow', 'not_messages' or a Bedrock error name"
            )
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}: must be a string or an object")
        allowed = {"error", "message", "latency_ms", "output_tokens", "cut_off", "slow_ms", "body"}
        unknown = set(item) - allowed
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        if "body" in item:
            return cls("body", body=item["body"])
        if "error" in item:
            name = item["error"]
            if name not in ERRORS:
                raise ConfigError(f"{where}.error: {name!r} is not a Bedrock error name")
            message = item.get("message")
            if message is not None and not isinstance(message, str):
                raise ConfigError(f"{where}.message: must be a string")
            return cls("error", error=name, message=message)
        if item.get("cut_off"):
            return cls("cut_off")
        if "slow_ms" in item:
            return cls("slow", slow_ms=_number(item["slow_ms"], f"{where}.slow_ms"))
        return cls(
            "ok",
            latency_ms=_number(item["latency_ms"], f"{where}.latency_ms") if "latency_ms" in item else None,
            output_tokens=(
                _int(item["output_tokens"], f"{where}.output_tokens", low=1)
                if "output_tokens" in item
                else None
            ),
        )


def parse_outcomes(items: Any, where: str = "outcomes") -> list[ScriptedOutcome]:
    """Validate a whole ``outcomes`` list before any of it is queued."""
    if not isinstance(items, list):
        raise ConfigError(f"{where}: must be a list")
    return [ScriptedOutcome.parse(x, f"{where}[{i}]") for i, x in enumerate(items)]


# --- parsing ---------------------------------------------------------------------------------------


def _number(value: Any, where: str, *, low: float = 0.0, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigError(f"{where}: must be a number")
    if value < low or (high is not None and value > high):
        bounds = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
        raise ConfigError(f"{where}: must be {bounds}, got {value!r}")
    return float(value)


def _int(value: Any, where: str, *, low: int | None = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: must be an integer")
    if low is not None and value < low:
        raise ConfigError(f"{where}: must be >= {low}, got {value!r}")
    return value


def _rate(value: Any, where: str) -> float:
    return _number(value, where, high=1.0)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false")
    return value


def _latency(value: Any, where: str) -> Latency:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Latency("fixed", ms=_number(value, where))
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must be a number of milliseconds or a table with `dist`")
    dist = value.get("dist", "fixed")
    keys = {
        "fixed": {"ms"},
        "lognormal": {"median_ms", "sigma", "max_ms"},
        "uniform": {"min_ms", "max_ms"},
    }
    if dist not in keys:
        raise ConfigError(f"{where}.dist: must be 'fixed', 'lognormal' or 'uniform', got {dist!r}")
    unknown = set(value) - keys[dist] - {"dist"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} for dist = {dist!r}")

    def num(key: str, default: float | None = None) -> float:
        if key not in value:
            if default is None:
                raise ConfigError(f"{where}.{key}: required for dist = {dist!r}")
            return default
        return _number(value[key], f"{where}.{key}")

    if dist == "fixed":
        return Latency("fixed", ms=num("ms", 0.0))
    if dist == "uniform":
        low, high = num("min_ms"), num("max_ms")
        if high < low:
            raise ConfigError(f"{where}: max_ms must be >= min_ms")
        return Latency("uniform", min_ms=low, max_ms=high)
    cap = num("max_ms") if "max_ms" in value else None
    return Latency("lognormal", median_ms=num("median_ms"), sigma=num("sigma", 0.0), max_ms=cap)


def _output_tokens(value: Any, where: str) -> OutputTokens:
    if isinstance(value, int) and not isinstance(value, bool):
        n = _int(value, where, low=1)
        return OutputTokens(n, n)
    if not isinstance(value, Mapping) or set(value) - {"min", "max"} or not value:
        raise ConfigError(f"{where}: must be an integer or a table {{min = N, max = M}}")
    low = _int(value.get("min", 1), f"{where}.min", low=1)
    high = _int(value.get("max", low), f"{where}.max", low=1)
    if high < low:
        raise ConfigError(f"{where}: max must be >= min")
    return OutputTokens(low, high)


def _outages(value: Any, where: str) -> tuple[Outage, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: must be an array of {{start_s, end_s}} tables")
    out = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{at}: must be a table {{start_s = .., end_s = ..}}")
        unknown = set(item) - {"start_s", "end_s", "error", "since"}
        if unknown:
            raise ConfigError(f"{at}: unknown key {sorted(unknown)[0]!r}")
        if "start_s" not in item or "end_s" not in item:
            raise ConfigError(f"{at}: start_s and end_s are required")
        start, end = _number(item["start_s"], f"{at}.start_s"), _number(item["end_s"], f"{at}.end_s")
        if end <= start:
            raise ConfigError(f"{at}: end_s must be greater than start_s")
        error = item.get("error", "ServiceUnavailableException")
        if error not in ERRORS:
            raise ConfigError(f"{at}.error: {error!r} is not a Bedrock error name")
        since = item.get("since", "set")
        if since not in ("set", "start"):
            raise ConfigError(f"{at}.since: must be 'set' or 'start'")
        out.append(Outage(start, end, error, since))
    return tuple(out)


def _error_name(value: Any, where: str) -> str:
    if value not in ERRORS:
        raise ConfigError(f"{where}: {value!r} is not a Bedrock error name")
    return str(value)


def _tpm(value: Any, where: str) -> int | None:
    n = _int(value, where)
    return n or None


def _burndown(value: Any, where: str) -> float:
    return _number(value, where)


def _quota_shape(value: Any, where: str) -> QuotaShapeName:
    for shape in QUOTA_SHAPES:
        if value == shape:
            return shape
    *others, last = (repr(shape) for shape in QUOTA_SHAPES)
    raise ConfigError(f"{where}: must be {', '.join(others)} or {last}, got {value!r}")


def _quota_reset_s(value: Any, where: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or math.isnan(value)
        or not 0 < value <= MINUTE_S
    ):
        raise ConfigError(
            f"{where}: must be a number of seconds greater than 0 and at most {MINUTE_S:g} "
            f"(when a fixed window's first minute ends), got {value!r}"
        )
    return float(value)


def _quota_start(value: Any, where: str) -> float:
    if value == "full":
        return 1.0
    if value == "empty":
        return 0.0
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or math.isnan(value)
        or not 0 <= value <= 1
    ):
        raise ConfigError(f"{where}: must be 'full', 'empty' or a share between 0 and 1, got {value!r}")
    return float(value)


def _other_consumer(value: Any, where: str) -> OtherConsumer | None:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must be a table {{share = 0.5, pattern = 'steady', period_s = 20}}")
    unknown = set(value) - {"share", "pattern", "period_s"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} (known: share, pattern, period_s)")
    share = _rate(value.get("share", 0.5), f"{where}.share")
    pattern = value.get("pattern", "steady")
    if pattern not in ("steady", "bursty"):
        raise ConfigError(f"{where}.pattern: must be 'steady' or 'bursty', got {pattern!r}")
    period_s = _number(value.get("period_s", 20.0), f"{where}.period_s", low=MIN_CONSUMER_PERIOD_S)
    if share == 0:
        return None  # `share = 0` switches off a consumer an earlier rule set
    return OtherConsumer(share, "bursty" if pattern == "bursty" else "steady", period_s)


def _tpm_changes(value: Any, where: str) -> tuple[TpmChange, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: must be an array of {{at_s, tpm}} tables")
    out = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{at}: must be a table {{at_s = .., tpm = ..}}")
        unknown = set(item) - {"at_s", "tpm"}
        if unknown:
            raise ConfigError(f"{at}: unknown key {sorted(unknown)[0]!r}")
        if "at_s" not in item or "tpm" not in item:
            raise ConfigError(f"{at}: at_s and tpm are required")
        at_s = _number(item["at_s"], f"{at}.at_s")
        tpm = _int(item["tpm"], f"{at}.tpm", low=None)
        if tpm <= 0:
            raise ConfigError(
                f"{at}.tpm: must be a positive number of tokens per minute, got {tpm} "
                "(a quota cannot be switched off mid-run)"
            )
        out.append(TpmChange(at_s, tpm))
    return tuple(sorted(out, key=lambda change: change.at_s))


_Parser: TypeAlias = Callable[[Any, str], Any]

# input key -> (FaultSettings field, parser). ``latency_ms`` and ``latency`` set the same field.
_SETTINGS: dict[str, tuple[str, _Parser]] = {
    "latency_ms": ("latency", _latency),
    "latency": ("latency", _latency),
    "per_output_token_ms": ("per_output_token_ms", _number),
    "throttle_rate": ("throttle_rate", _rate),
    "tpm": ("tpm", _tpm),
    "output_burndown": ("output_burndown", _burndown),
    "quota_shape": ("quota_shape", _quota_shape),
    "quota_start": ("quota_start", _quota_start),
    "quota_reset_s": ("quota_reset_s", _quota_reset_s),
    "other_consumer": ("other_consumer", _other_consumer),
    "tpm_changes": ("tpm_changes", _tpm_changes),
    "error_rate": ("error_rate", _rate),
    "error_type": ("error_type", _error_name),
    "outages": ("outages", _outages),
    "access_denied": ("access_denied", _bool),
    "cut_off_rate": ("cut_off_rate", _rate),
    "slow_rate": ("slow_rate", _rate),
    "slow_ms": ("slow_ms", _number),
    "output_tokens": ("output_tokens", _output_tokens),
}


def _parse_settings(table: Mapping[str, Any], where: str) -> list[tuple[str, Any]]:
    if "latency_ms" in table and "latency" in table:
        raise ConfigError(f"{where}: give latency_ms or latency, not both")
    out = []
    for key, value in table.items():
        if key not in _SETTINGS:
            raise ConfigError(
                f"{where}: unknown fault setting {key!r} (known: {', '.join(sorted(_SETTINGS))})"
            )
        name, parse = _SETTINGS[key]
        out.append((name, parse(value, f"{where}.{key}")))
    return out


def _parse_rule(entry: Any, where: str) -> RouteRule:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: must be a table")
    profile = entry.get("profile", "*")
    region = entry.get("region", "*")
    if not isinstance(profile, str) or not profile:
        raise ConfigError(f"{where}.profile: must be a non-empty string (an id or a glob)")
    if not isinstance(region, str) or not region:
        raise ConfigError(f"{where}.region: must be a non-empty string (a region or a glob)")
    rest = {k: v for k, v in entry.items() if k not in ("profile", "region")}
    return RouteRule(profile, region, tuple(_parse_settings(rest, where)))


def _dump_field(name: str, value: Any) -> Any:
    if isinstance(value, Latency):
        return value.to_dict()
    if isinstance(value, OutputTokens):
        return value.to_json()
    if isinstance(value, OtherConsumer):
        return value.to_dict()
    if name in ("outages", "tpm_changes"):
        return [item.to_dict() for item in value]
    if name == "quota_start":
        return {1.0: "full", 0.0: "empty"}.get(value, value)
    return value
