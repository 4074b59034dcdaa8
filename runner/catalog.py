"""The Claude-on-Bedrock model catalogue: ids, geographies, limits and quota burndown.

This is data, shared by the runner and the emulator (and nothing else is shared between them), so
that the emulator rejects exactly what the runner's preflight warns about. Facts come from
``shared/BEDROCK.md``; where a figure is unverified it is marked so and every consumer lets the user
override it. Prices live in ``runner/prices.toml`` because users replace them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

GEOGRAPHIES: tuple[str, ...] = ("global", "us", "eu", "jp", "apac")
"""Inference-profile prefixes. ``global`` routes anywhere; the others keep data in one geography."""

DEFAULT_REGION = "us-east-1"

# Regions that serve each geographic inference profile (source regions). A regional profile can only
# be called from a region of its own geography; ``global.`` can be called from any of them.
GEOGRAPHY_REGIONS: dict[str, tuple[str, ...]] = {
    "us": ("us-east-1", "us-east-2", "us-west-1", "us-west-2"),
    "eu": ("eu-central-1", "eu-west-1", "eu-west-2", "eu-west-3", "eu-north-1", "eu-south-1", "eu-south-2"),
    "jp": ("ap-northeast-1", "ap-northeast-3"),
    "apac": ("ap-southeast-1", "ap-southeast-2", "ap-northeast-2", "ap-south-1", "ap-south-2"),
}

OTHER_REGIONS: tuple[str, ...] = (
    "ca-central-1",
    "ca-west-1",
    "sa-east-1",
    "mx-central-1",
    "us-gov-east-1",
    "us-gov-west-1",
    "eu-central-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-7",
    "ap-east-2",
    "me-central-1",
    "me-south-1",
    "il-central-1",
    "af-south-1",
)
"""Bedrock regions that are a source region of no geographic profile above: they can call ``global.``
(where a model has it) and nothing regional. With :data:`GEOGRAPHY_REGIONS` they are the regions the
runner accepts (:func:`check_region`); any other name is a typo until a catalogue adds it."""


class UnknownRegionError(LookupError):
    """A region name the catalogue does not know (raised by :func:`check_region`; callers translate it)."""


def known_regions() -> tuple[str, ...]:
    """Every region the runner accepts, geographies' source regions first. The one list to extend (a
    user catalogue adding a region adds it here)."""
    regions = [r for rs in GEOGRAPHY_REGIONS.values() for r in rs]
    return tuple(dict.fromkeys([*regions, *OTHER_REGIONS]))


def check_region(region: str) -> None:
    """Raise :class:`UnknownRegionError` (its message lists close names) unless ``region`` is known."""
    known = known_regions()
    if region in known:
        return
    import difflib

    close = difflib.get_close_matches(region, known, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
    raise UnknownRegionError(f"{region!r} is not a Bedrock region the catalogue knows ({hint})")


@dataclass(frozen=True, slots=True)
class Model:
    """One Claude model as Bedrock offers it."""

    base_id: str
    name: str
    geographies: frozenset[str]
    max_output_tokens: int
    context_window: int = 200_000
    deprecated: dt.date | None = None
    output_burndown: float = 1.0
    """How many quota tokens one output token costs (BEDROCK.md: 5x for Sonnet 3.7/4/4.5, Opus 4)."""
    burndown_verified: bool = False
    exclusive_sampling: bool = False
    """Accepts ``temperature`` or ``top_p`` but not both (Sonnet 4.5, Haiku 4.5)."""
    regional_surcharge: bool = False
    """Regional (geographic) profiles cost 10 % more than ``global.`` (Sonnet 4.5 and newer)."""
    long_context_beta: str | None = None
    """The ``anthropic_beta`` flag that unlocks a 1M-token context window, where the model has one."""

    def profile_id(self, geography: str) -> str:
        """The inference profile id for ``geography`` (``global.anthropic...``)."""
        return f"{geography}.{self.base_id}"


MODELS: tuple[Model, ...] = (
    Model(
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
        "Claude Sonnet 4.5",
        frozenset({"global", "us", "eu", "jp"}),
        max_output_tokens=64_000,
        output_burndown=5.0,
        burndown_verified=True,
        exclusive_sampling=True,
        regional_surcharge=True,
        long_context_beta="context-1m-2025-08-07",
    ),
    Model(
        "anthropic.claude-sonnet-4-20250514-v1:0",
        "Claude Sonnet 4",
        frozenset({"global", "us", "eu", "apac"}),
        max_output_tokens=64_000,
        output_burndown=5.0,
        burndown_verified=True,
        long_context_beta="context-1m-2025-08-07",
    ),
    Model(
        "anthropic.claude-3-7-sonnet-20250219-v1:0",
        "Claude Sonnet 3.7",
        frozenset({"us", "eu", "apac"}),
        max_output_tokens=64_000,
        deprecated=dt.date(2025, 10, 28),
        output_burndown=5.0,
        burndown_verified=True,
    ),
    Model(
        "anthropic.claude-opus-4-5-20251101-v1:0",
        "Claude Opus 4.5",
        frozenset({"global", "us", "eu"}),
        max_output_tokens=64_000,
        output_burndown=5.0,
        regional_surcharge=True,
    ),
    Model(
        "anthropic.claude-opus-4-1-20250805-v1:0",
        "Claude Opus 4.1",
        frozenset({"us"}),
        max_output_tokens=32_000,
        output_burndown=5.0,
    ),
    Model(
        "anthropic.claude-opus-4-20250514-v1:0",
        "Claude Opus 4",
        frozenset({"us"}),
        max_output_tokens=32_000,
        output_burndown=5.0,
        burndown_verified=True,
    ),
    Model(
        "anthropic.claude-3-opus-20240229-v1:0",
        "Claude Opus 3",
        frozenset({"us"}),
        max_output_tokens=4_096,
        deprecated=dt.date(2025, 6, 30),
    ),
    Model(
        "anthropic.claude-haiku-4-5-20251001-v1:0",
        "Claude Haiku 4.5",
        frozenset({"global", "us", "eu"}),
        max_output_tokens=64_000,
        output_burndown=1.0,
        burndown_verified=True,
        exclusive_sampling=True,
        regional_surcharge=True,
    ),
    Model(
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "Claude Haiku 3.5",
        frozenset({"us"}),
        max_output_tokens=8_192,
        deprecated=dt.date(2025, 12, 19),
    ),
    Model(
        "anthropic.claude-3-haiku-20240307-v1:0",
        "Claude Haiku 3",
        frozenset({"us", "eu", "apac"}),
        max_output_tokens=4_096,
    ),
)

_BY_BASE_ID: dict[str, Model] = {m.base_id: m for m in MODELS}


class UnknownModelError(LookupError):
    """An id that names no model of the catalogue (raised by pure look-ups; callers translate it)."""


def find_model(model_id: str) -> tuple[Model, str | None]:
    """Split a base model id or an inference profile id into the model and its geography.

    ``anthropic.claude-...`` gives ``(model, None)``; ``eu.anthropic.claude-...`` gives ``(model, "eu")``.
    Raises :class:`UnknownModelError` for anything else, including a geography the catalogue does not
    know; whether the model *has* that geography (``model.geographies``) is the caller's question.
    """
    if model_id in _BY_BASE_ID:
        return _BY_BASE_ID[model_id], None
    prefix, _, rest = model_id.partition(".")
    if prefix in GEOGRAPHIES and rest in _BY_BASE_ID:
        return _BY_BASE_ID[rest], prefix
    raise UnknownModelError(model_id)


def region_geography(region: str) -> str | None:
    """The geography whose regional profiles a region may call, or ``None`` if it has none."""
    for geography, regions in GEOGRAPHY_REGIONS.items():
        if region in regions:
            return geography
    return None


def home_region(geography: str) -> str:
    """A sensible region to call a geography's profile from when the user gave none for it."""
    return GEOGRAPHY_REGIONS[geography][0]


def is_deprecated(model: Model, today: dt.date | None = None) -> bool:
    """Whether the model's deprecation date has passed."""
    if model.deprecated is None:
        return False
    return (today or dt.date.today()) >= model.deprecated
