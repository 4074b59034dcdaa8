"""Per-route state: resolved faults, quota and counters of one (inference profile, region).

Built the first time a route is called and kept, so the hot path does one dict look-up instead of
matching globs, parsing the model id or consulting the catalogue per request. Re-resolved (counters
and quota kept) when the faults change; the quota starts afresh only when its shape or scenario does.
"""

from __future__ import annotations

import math

from runner.catalog import Model, UnknownModelError, app_profile, find_model
from runner.emulator.config import FaultSettings, Outage
from runner.emulator.control import ACCOUNT_ID, callable_from
from runner.emulator.errors import BedrockError
from runner.emulator.quota import RouteQuota


def not_found(message: str) -> BedrockError:
    return BedrockError("ResourceNotFoundException", message)


def route_error(profile: str, region: str) -> tuple[Model | None, BedrockError | None]:
    """The model a route calls, or the error Bedrock answers for it whatever the body.

    An id the catalogue does not know, a known model in a geography it does not have, and a
    geographic profile called from a region outside its geography are all a
    ``ResourceNotFoundException``, so a client can tell "this route does not exist" (never retry it)
    from "this row is bad" (``ValidationException``). Bedrock itself answers some malformed ids with
    a ValidationException ("The provided model identifier is invalid."); the project's acceptance
    checks ask for not-found here, which is also what a runner should act on.
    A base model id (no geography prefix) is accepted from any region, as in-region on-demand.
    """
    try:
        model, geography = find_model(profile)
    except UnknownModelError:
        return None, not_found(f"The model or inference profile {profile} was not found.")
    app = app_profile(profile)
    if app is not None:  # an application inference profile lives in one region
        if app.region != region:
            return model, not_found(f"The inference profile {profile} was not found in region {region}.")
        return model, None
    if geography is None:
        return model, None
    if geography not in model.geographies:
        return model, BedrockError(
            "ResourceNotFoundException",
            f"Could not resolve the inference profile {profile}: {model.name} has no {geography} profile.",
        )
    if not callable_from(geography, region):
        return model, BedrockError(
            "ResourceNotFoundException",
            f"The inference profile {profile} cannot be called from region {region}.",
        )
    return model, None


class RouteState:
    """Mutable, owned by the emulator's event loop."""

    __slots__ = (
        "burndown",
        "cache_read",
        "cache_write",
        "capacity_throttles",
        "error",
        "fault_key",
        "input_tokens",
        "model",
        "name",
        "outcomes",
        "output_tokens",
        "profile",
        "quota",
        "quota_key",
        "quota_throttles",
        "region",
        "settings",
    )

    def __init__(
        self, profile: str, region: str, settings: FaultSettings, *, seed: int, now: float = 0.0
    ) -> None:
        self.profile = profile
        self.region = region
        self.name = f"{profile}@{region}"
        self.model, self.error = route_error(profile, region)
        self.fault_key = f"{seed}|{self.name}|".encode()
        self.outcomes: dict[str, int] = {}
        self.input_tokens = self.output_tokens = self.cache_read = self.cache_write = 0
        self.quota_throttles = self.capacity_throttles = 0
        self.quota: RouteQuota | None = None
        self.quota_key: tuple[object, ...] = ()
        self.settings = settings
        self.burndown = 1.0
        self.apply(settings, seed=seed, now=now)

    def apply(self, settings: FaultSettings, *, seed: int, now: float = 0.0) -> None:
        """Take new fault settings at ``now``.

        The quota is created when ``tpm`` is first set, and created afresh (start level, other
        consumer, ``tpm_changes`` and a fixed window's minutes clock from ``now``, new timeline) when
        its shape or scenario changes (``quota_reset_s`` counts only for a fixed window); a new ``tpm``
        alone changes the limit of the running quota, whose in-flight reservations stay. Settings that
        do not touch the quota leave it alone, so a ``tpm_changes`` entry that already fired is not
        undone by an unrelated ``PATCH``.
        """
        old = self.settings
        self.settings = settings
        self.fault_key = f"{seed}|{self.name}|".encode()
        if settings.output_burndown is not None:
            self.burndown = settings.output_burndown
        else:
            self.burndown = self.model.output_burndown if self.model is not None else 1.0
        reset_s = settings.quota_reset_s if settings.quota_shape == "fixed" else None  # fixed only
        key = (
            settings.quota_shape,
            settings.quota_start,
            reset_s,
            settings.other_consumer,
            settings.tpm_changes,
        )
        if settings.tpm is None:
            self.quota = None
        elif self.quota is None or key != self.quota_key:
            self.quota = RouteQuota(
                settings.tpm,
                now=now,
                shape=settings.quota_shape,
                start=settings.quota_start,
                reset_s=settings.quota_reset_s,
                other_consumer=settings.other_consumer,
                tpm_changes=settings.tpm_changes,
            )
        elif settings.tpm != old.tpm:
            self.quota.set_limit(settings.tpm, now)
        self.quota_key = key

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def access_denied(self) -> BedrockError:
        return BedrockError(
            "AccessDeniedException",
            f"User: arn:aws:iam::{ACCOUNT_ID}:user/emulator is not authorized to perform: "
            f"bedrock:InvokeModel on resource: "
            f"arn:aws:bedrock:{self.region}:{ACCOUNT_ID}:inference-profile/{self.profile} "
            "because no identity-based policy allows the bedrock:InvokeModel action",
        )


def outage_error(outages: tuple[Outage, ...], *, since_start: float, since_set: float) -> str | None:
    """The error name of the outage covering this moment, if any (pure: both clocks passed in)."""
    for outage in outages:
        t = since_set if outage.since == "set" else since_start
        if outage.start_s <= t < outage.end_s:
            return outage.error
    return None


def uniforms(digest: bytes) -> tuple[float, float, float, float, float, float]:
    """Six independent uniforms in (0, 1] from a 32-byte digest (the per-request fault draws)."""
    return (
        (int.from_bytes(digest[0:4], "big") + 1) / 4294967296.0,
        (int.from_bytes(digest[4:8], "big") + 1) / 4294967296.0,
        (int.from_bytes(digest[8:12], "big") + 1) / 4294967296.0,
        (int.from_bytes(digest[12:16], "big") + 1) / 4294967296.0,
        (int.from_bytes(digest[16:20], "big") + 1) / 4294967296.0,
        (int.from_bytes(digest[20:24], "big") + 1) / 4294967296.0,
    )


def prompt_uniform(prompt_key: int, seed: int) -> float:
    """A uniform in [0, 1) that depends on the prompt and seed only (how long the answer is)."""
    mixed = (prompt_key * 0x9E3779B97F4A7C15 + seed * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return math.ldexp(mixed >> 11, -53)
