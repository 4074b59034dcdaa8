"""The Claude-on-Bedrock model catalogue: ids, geographies, limits and quota burndown.

This is data, shared by the runner and the emulator (and nothing else is shared between them), so
that the emulator rejects exactly what the runner's preflight warns about. Facts come from
``shared/BEDROCK.md``; where a figure is unverified it is marked so and every consumer lets the user
override it. Prices live in ``runner/prices.toml`` because users replace them.

The built-in catalogue (:data:`BUILTIN`) is one :class:`Catalog`; a user catalogue file (TOML, see
``docs/catalog.md``) is merged over it by :func:`load_catalog` and made the one every look-up uses
by :func:`activate` (``[model] catalog`` in a spec, ``--catalog`` on the commands, or the
``BEDROCK_BATCH_CATALOG`` environment variable): a model released next month, a geography or a
region Bedrock adds, a corrected figure, or an application inference profile ARN needs no code
change. The look-ups below (:func:`find_model`, :func:`models`, :func:`geographies`,
:func:`region_geographies`, ...) read the active catalogue.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from runner.errors import SpecError

DEFAULT_REGION = "us-east-1"
CATALOG_ENV = "BEDROCK_BATCH_CATALOG"
"""Environment variable naming a user catalogue file for every command (a spec's ``[model] catalog``
and ``--catalog`` take precedence)."""

# Regions that serve each geographic inference profile (source regions). A regional profile can only
# be called from a region of its own geography; ``global.`` can be called from any of them. A region
# may serve two geographies (Sydney: ``apac`` and ``au``); the narrower one is its home
# (:func:`region_geographies`).
#
# ``au``: the ``au.`` profiles (data kept in Australia) of Sonnet 4.5 and Haiku 4.5, called from
# Sydney (ap-southeast-2) and Melbourne (ap-southeast-4). Unverified against AWS's own table of
# inference profiles (several public projects call ``au.anthropic.claude-sonnet-4-5-20250929-v1:0``
# and ``au.anthropic.claude-haiku-4-5-20251001-v1:0`` from ap-southeast-2); a user catalogue
# (``[regions] au = [...]``, a model's ``geographies``) corrects either without a code change.
BUILTIN_GEOGRAPHY_REGIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "us": ("us-east-1", "us-east-2", "us-west-1", "us-west-2"),
        "eu": (
            "eu-central-1",
            "eu-west-1",
            "eu-west-2",
            "eu-west-3",
            "eu-north-1",
            "eu-south-1",
            "eu-south-2",
        ),
        "jp": ("ap-northeast-1", "ap-northeast-3"),
        "apac": ("ap-southeast-1", "ap-southeast-2", "ap-northeast-2", "ap-south-1", "ap-south-2"),
        "au": ("ap-southeast-2", "ap-southeast-4"),
    }
)
GEOGRAPHY_REGIONS = BUILTIN_GEOGRAPHY_REGIONS
"""The built-in source regions per geography (the active catalogue's: :func:`geography_regions`)."""
GEOGRAPHIES: tuple[str, ...] = ("global", *BUILTIN_GEOGRAPHY_REGIONS)
"""Built-in inference-profile prefixes. ``global`` routes anywhere; the others keep data in one
geography (the active catalogue's: :func:`geographies`)."""

LONG_CONTEXT_WINDOW = 1_000_000
"""The context window a model's ``long_context_beta`` flag unlocks."""

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


def check_region(region: str) -> None:
    """Raise :class:`UnknownRegionError` (its message lists close names) unless ``region`` is known."""
    known = sorted(known_regions())
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


@dataclass(frozen=True, slots=True)
class AppProfile:
    """An application inference profile (made for cost-allocation tags), known by its ARN.

    ``geography`` is the system profile it was copied from (``global``, ``us``, ...), or ``None`` when
    it wraps the foundation model in its own region (priced and kept there, as a base id is).
    """

    arn: str
    model: Model
    geography: str | None
    region: str
    name: str = ""


MODELS: tuple[Model, ...] = (
    Model(
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
        "Claude Sonnet 4.5",
        frozenset({"global", "us", "eu", "jp", "au"}),
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
        frozenset({"global", "us", "eu", "au"}),
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
"""The built-in models (the active catalogue's: :func:`models`)."""


class UnknownModelError(LookupError):
    """An id that names no model of the catalogue (raised by pure look-ups; callers translate it)."""


@dataclass(frozen=True, slots=True, eq=False)
class Catalog:
    """Models, the source regions of each geography, and application inference profiles.

    ``prices`` and ``long_context_prices`` are a user catalogue's prices (USD per million tokens,
    keyed by base id, each a mapping of ``input``, ``output``, ``cache_write``, ``cache_read``), merged
    over the price table by :meth:`runner.pricing.PriceTable.load`. ``origin`` names where the
    catalogue came from, for messages and reports.
    """

    models: tuple[Model, ...]
    geography_regions: Mapping[str, tuple[str, ...]]
    profiles: Mapping[str, AppProfile] = field(default_factory=dict)
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    long_context_prices: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    origin: str = "built-in"
    _by_base_id: Mapping[str, Model] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_base_id", MappingProxyType({m.base_id: m for m in self.models}))

    @property
    def geographies(self) -> tuple[str, ...]:
        return ("global", *self.geography_regions)

    def find_model(self, model_id: str) -> tuple[Model, str | None]:
        """See :func:`find_model`."""
        model = self._by_base_id.get(model_id)
        if model is not None:
            return model, None
        profile = self.profiles.get(model_id)
        if profile is not None:
            return profile.model, profile.geography
        prefix, _, rest = model_id.partition(".")
        if prefix in self.geographies and rest in self._by_base_id:
            return self._by_base_id[rest], prefix
        raise UnknownModelError(model_id)

    def region_geographies(self, region: str) -> tuple[str, ...]:
        """The geographies whose regional profiles ``region`` may call, narrowest first."""
        found = [g for g, regions in self.geography_regions.items() if region in regions]
        return tuple(sorted(found, key=lambda g: len(self.geography_regions[g])))

    def known_regions(self) -> frozenset[str]:
        """Every source region of every geography (a region outside them may still call ``global.``)."""
        return frozenset(r for regions in self.geography_regions.values() for r in regions)


BUILTIN = Catalog(models=MODELS, geography_regions=BUILTIN_GEOGRAPHY_REGIONS)
"""The catalogue that ships with bedrock-batch."""

_active: Catalog = BUILTIN


def current() -> Catalog:
    """The catalogue every look-up uses: the built-in one, or a user catalogue merged over it."""
    return _active


def install(catalog: Catalog) -> None:
    """Make ``catalog`` the active catalogue (of this process: the runner and an in-process emulator)."""
    global _active
    _active = catalog


def reset() -> None:
    """Back to the built-in catalogue."""
    install(BUILTIN)


def activate(path: str | Path | None = None) -> Catalog:
    """Make the user catalogue at ``path`` (else ``$BEDROCK_BATCH_CATALOG``, else none) the active one,
    merged over the built-in catalogue; returns it. Errors are :class:`runner.errors.SpecError`
    naming the file and key."""
    chosen = str(path or "") or os.environ.get(CATALOG_ENV, "")
    catalog = load_catalog(chosen) if chosen else BUILTIN
    install(catalog)
    return catalog


# -- the look-ups (of the active catalogue) -------------------------------------------------------


def models() -> tuple[Model, ...]:
    """Every model of the active catalogue."""
    return _active.models


def geographies() -> tuple[str, ...]:
    """Inference-profile prefixes of the active catalogue: ``global``, then the geographies."""
    return _active.geographies


def geography_regions() -> Mapping[str, tuple[str, ...]]:
    """Source regions of each geography of the active catalogue."""
    return _active.geography_regions


def known_regions() -> frozenset[str]:
    """Every region the runner accepts: the active catalogue's source regions, and the regions that
    call only ``global.`` (:data:`OTHER_REGIONS`). The one list a user catalogue extends."""
    return _active.known_regions() | frozenset(OTHER_REGIONS)


def find_model(model_id: str) -> tuple[Model, str | None]:
    """Split a base model id, an inference profile id or an application profile ARN into the model
    and its geography.

    ``anthropic.claude-...`` gives ``(model, None)``; ``eu.anthropic.claude-...`` gives ``(model, "eu")``;
    an application profile's ARN gives its model and the geography it was copied from. Raises
    :class:`UnknownModelError` for anything else, including a geography the catalogue does not know;
    whether the model *has* that geography (``model.geographies``) is the caller's question.
    """
    return _active.find_model(model_id)


def app_profile(model_id: str) -> AppProfile | None:
    """The application inference profile ``model_id`` is the ARN of, if the catalogue knows it."""
    return _active.profiles.get(model_id)


def region_geographies(region: str) -> tuple[str, ...]:
    """The geographies whose regional profiles ``region`` may call, narrowest first."""
    return _active.region_geographies(region)


def region_geography(region: str, model: Model | None = None) -> str | None:
    """The geography whose regional profiles a region calls (``None`` if it has none): the narrowest
    one holding the region, among those ``model`` has when a model is given (Sydney: ``au`` for
    Sonnet 4.5, ``apac`` for Sonnet 4)."""
    found = _active.region_geographies(region)
    if model is not None:
        found = tuple(g for g in found if g in model.geographies) or found
    return found[0] if found else None


def home_region(geography: str) -> str:
    """A sensible region to call a geography's profile from when the user gave none for it."""
    return _active.geography_regions[geography][0]


def is_deprecated(model: Model, today: dt.date | None = None) -> bool:
    """Whether the model's deprecation date has passed."""
    if model.deprecated is None:
        return False
    return (today or dt.date.today()) >= model.deprecated


# -- the user catalogue file ------------------------------------------------------------------------

_MODEL_KEYS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "geographies": list,
    "max_output_tokens": int,
    "context_window": int,
    "deprecated": (dt.date, str),
    "output_burndown": (int, float),
    "exclusive_sampling": bool,
    "regional_surcharge": bool,
    "long_context_beta": str,
    "prices": dict,
    "long_context_prices": dict,
}
_PRICE_KEYS = ("input", "output", "cache_write", "cache_read")
_PROFILE_KEYS = frozenset({"model", "geography", "name"})


def load_catalog(path: str | Path, *, base: Catalog = BUILTIN) -> Catalog:
    """Read a user catalogue file and merge it over ``base``; :class:`SpecError` names file and key.

    The file's tables (every one optional; ``docs/catalog.md`` has a worked example):

    - ``[regions]``: ``<geography> = ["region", ...]``: the source regions of a geography, replacing
      the built-in list, or a new geography (its profiles are ``<geography>.<base id>``);
    - ``[models."<base id>"]``: a model the built-in catalogue lacks (``geographies`` and
      ``max_output_tokens`` required), or keys that replace a known model's: ``name``,
      ``geographies``, ``max_output_tokens``, ``context_window``, ``output_burndown``,
      ``exclusive_sampling``, ``regional_surcharge``, ``long_context_beta``, ``deprecated``, and
      ``prices`` / ``long_context_prices`` (tables of input, output, cache_write, cache_read, USD per
      million tokens, merged over the price table);
    - ``[profiles."<application inference profile ARN>"]``: ``model`` (a base id), ``geography`` (the
      system profile it was copied from; absent: the foundation model in the ARN's region), ``name``.
    """
    origin = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{origin}: catalogue file not found") from None
    except OSError as exc:
        raise SpecError(f"{origin}: cannot read the catalogue ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{origin}: not valid TOML ({exc})") from None
    unknown = set(data) - {"regions", "models", "profiles"}
    if unknown:
        raise SpecError(
            f"{origin}: unknown table [{sorted(unknown)[0]}] (expected regions, models, profiles)"
        )

    regions = dict(base.geography_regions)
    for geography, listed in _table(data, "regions", origin).items():
        where = f"{origin}: regions.{geography}"
        if geography == "global" or not geography.isidentifier() or "." in geography:
            raise SpecError(f"{where}: not a geography name (a short prefix such as `au`)")
        if not isinstance(listed, list) or not listed or not all(isinstance(r, str) and r for r in listed):
            raise SpecError(f"{where} must be a non-empty list of region names")
        regions[geography] = tuple(listed)
    geos = ("global", *regions)

    by_id = {m.base_id: m for m in base.models}
    prices = {k: dict(v) for k, v in base.prices.items()}
    long_prices = {k: dict(v) for k, v in base.long_context_prices.items()}
    for base_id, entry in _table(data, "models", origin).items():
        where = f'{origin}: models."{base_id}"'
        prefix, _, rest = base_id.partition(".")
        if prefix in geos and rest:
            raise SpecError(f"{where}: name the base model id {rest!r}, not a profile id")
        if not isinstance(entry, dict):
            raise SpecError(f"{where} must be a table")
        for key, value in entry.items():
            wanted = _MODEL_KEYS.get(key)
            if wanted is None:
                raise SpecError(f"{where}.{key} is not a catalogue key (known: {', '.join(_MODEL_KEYS)})")
            if not isinstance(value, wanted) or (isinstance(value, bool) and wanted is not bool):
                raise SpecError(f"{where}.{key} has the wrong type ({type(value).__name__})")
        changes = _model_changes(entry, where, geos)
        known = by_id.get(base_id)
        if known is None:
            for key in ("geographies", "max_output_tokens"):
                if key not in entry:
                    raise SpecError(f"{where}: a new model needs `{key}`")
            changes.setdefault("name", base_id)
            by_id[base_id] = Model(base_id, **changes)
        else:
            by_id[base_id] = replace(known, **changes)
        if "prices" in entry:
            prices[base_id] = _prices(entry["prices"], f"{where}.prices")
        if "long_context_prices" in entry:
            long_prices[base_id] = _prices(entry["long_context_prices"], f"{where}.long_context_prices")

    profiles = dict(base.profiles)
    for arn, entry in _table(data, "profiles", origin).items():
        where = f'{origin}: profiles."{arn}"'
        profiles[arn] = _profile(arn, entry, where, by_id, geos, regions)

    return Catalog(
        models=tuple(by_id.values()),
        geography_regions=MappingProxyType(regions),
        profiles=MappingProxyType(profiles),
        prices=MappingProxyType(prices),
        long_context_prices=MappingProxyType(long_prices),
        origin=f"{base.origin} + {origin}" if base is not BUILTIN else origin,
    )


def _table(data: Mapping[str, Any], key: str, origin: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SpecError(f"{origin}: {key} must be a table ([{key}])")
    return value


def _model_changes(entry: Mapping[str, Any], where: str, geos: tuple[str, ...]) -> dict[str, Any]:
    """The :class:`Model` fields a catalogue entry sets, checked."""
    changes: dict[str, Any] = {}
    if "name" in entry:
        changes["name"] = entry["name"]
    if "geographies" in entry:
        listed = entry["geographies"]
        bad = [g for g in listed if g not in geos]
        if bad or not listed:
            raise SpecError(
                f"{where}.geographies: {bad[0] if bad else 'an empty list'!r} is not a geography "
                f"(known: {', '.join(geos)}; add one under [regions])"
            )
        changes["geographies"] = frozenset(listed)
    for key in ("max_output_tokens", "context_window"):
        if key in entry:
            if entry[key] < 1:
                raise SpecError(f"{where}.{key} must be a positive integer")
            changes[key] = entry[key]
    if "output_burndown" in entry:
        value = float(entry["output_burndown"])
        if not math.isfinite(value) or value <= 0:
            raise SpecError(f"{where}.output_burndown must be a positive number")
        changes["output_burndown"] = value
        changes["burndown_verified"] = False  # the user's figure, not one BEDROCK.md checked
    for key in ("exclusive_sampling", "regional_surcharge"):
        if key in entry:
            changes[key] = entry[key]
    if "long_context_beta" in entry:
        changes["long_context_beta"] = entry["long_context_beta"] or None
    if "deprecated" in entry:
        raw = entry["deprecated"]
        if isinstance(raw, str):
            try:
                raw = dt.date.fromisoformat(raw)
            except ValueError:
                raise SpecError(f"{where}.deprecated must be a date (2026-06-30)") from None
        changes["deprecated"] = raw.date() if isinstance(raw, dt.datetime) else raw
    return changes


def _prices(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, dict) or set(value) != set(_PRICE_KEYS):
        raise SpecError(f"{where} must be a table of exactly {', '.join(_PRICE_KEYS)} (USD per million)")
    out: dict[str, float] = {}
    for key in _PRICE_KEYS:
        number = value[key]
        if isinstance(number, bool) or not isinstance(number, int | float) or not 0 <= number < math.inf:
            raise SpecError(f"{where}.{key} must be a non-negative number (got {number!r})")
        out[key] = float(number)
    return out


def _profile(
    arn: str,
    entry: Any,
    where: str,
    by_id: Mapping[str, Model],
    geos: tuple[str, ...],
    regions: Mapping[str, tuple[str, ...]],
) -> AppProfile:
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "bedrock" or "inference-profile/" not in parts[5]:
        raise SpecError(
            f"{where}: not an inference profile ARN "
            "(arn:aws:bedrock:<region>:<account>:application-inference-profile/<id>)"
        )
    region = parts[3]
    if not isinstance(entry, dict):
        raise SpecError(f"{where} must be a table with `model` (and `geography`, `name`)")
    extra = set(entry) - _PROFILE_KEYS
    if extra:
        raise SpecError(f"{where}.{sorted(extra)[0]} is not a profile key (known: model, geography, name)")
    model = by_id.get(str(entry.get("model", "")))
    if model is None:
        raise SpecError(
            f"{where}.model must be the base id of a catalogue model (got {entry.get('model')!r})"
        )
    geography = entry.get("geography") or None
    if geography is not None:
        if geography not in geos or geography not in model.geographies:
            raise SpecError(
                f"{where}.geography {geography!r} is not one of {model.name}'s "
                f"({', '.join(sorted(model.geographies))})"
            )
        if geography != "global" and region not in regions.get(geography, ()):
            raise SpecError(f"{where}: region {region} cannot call {geography!r} profiles")
    name = entry.get("name", "")
    if not isinstance(name, str):
        raise SpecError(f"{where}.name must be a string")
    return AppProfile(arn=arn, model=model, geography=geography, region=region, name=name)
