"""What tokens cost: the price table (``runner/prices.toml`` or the user's own) and the arithmetic.

Prices change more often than code, so they are data a user can replace, and every figure the runner
prints names the table that priced it (``PriceTable.name``). The table holds list prices (on-demand,
global endpoint, USD per million tokens) per *base* model id; the two rules that turn a list price into
what a call costs live beside them:

- ``regional_surcharge``: geographic profiles (``us.``, ``eu.``, ...) and in-region base ids cost this
  much more than ``global.`` for models whose catalogue entry says so (Sonnet 4.5 and newer);
- ``batch_discount``: the ``batch`` lane (Bedrock batch inference) costs ``1 - batch_discount`` of it.

``PriceTable.cost`` runs once per result row, so the table precomputes, for every id it can price
(base id and each profile id) and each lane, the four per-token rates; a cost is one dict look-up and
four multiplications.
"""

from __future__ import annotations

import functools
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from runner import catalog
from runner.errors import SpecError
from runner.types import Usage

LANES: tuple[str, ...] = ("on_demand", "batch")
"""How a row was served: InvokeModel (``on_demand``) or Bedrock batch inference (``batch``)."""

PER_MILLION = 1_000_000
PRICE_KEYS: tuple[str, ...] = ("input", "output", "cache_write", "cache_read")
"""The four prices of a model, USD per million tokens, in the order ``Rates`` holds them."""

DEFAULT_REGIONAL_SURCHARGE = 0.10
DEFAULT_BATCH_DISCOUNT = 0.50
BUILTIN_FILE = "prices.toml"


class Rates(NamedTuple):
    """USD per *token* of each kind, named as :class:`runner.types.Usage` names the counts (a price
    list's ``cache_write`` is ``cache_creation_input_tokens``)."""

    input_tokens: float
    output_tokens: float
    cache_creation_input_tokens: float
    cache_read_input_tokens: float


_MODEL_KEYS = frozenset({*PRICE_KEYS, "source", "regional_surcharge"})


@dataclass(frozen=True, slots=True)
class Price:
    """One model's prices in USD per million tokens (what people read and price lists print)."""

    input: float
    output: float
    cache_write: float
    cache_read: float
    source: str = ""
    """Where the figure comes from (``bedrock``, ``anthropic-list``, or whatever a user file says)."""

    def scaled(self, factor: float) -> Price:
        """The same price times ``factor`` (surcharge, batch discount)."""
        return Price(
            self.input * factor,
            self.output * factor,
            self.cache_write * factor,
            self.cache_read * factor,
            self.source,
        )

    def per_token(self) -> Rates:
        """The four prices per token, the unit ``cost`` multiplies by."""
        return Rates(
            input_tokens=self.input / PER_MILLION,
            output_tokens=self.output / PER_MILLION,
            cache_creation_input_tokens=self.cache_write / PER_MILLION,
            cache_read_input_tokens=self.cache_read / PER_MILLION,
        )


@dataclass(frozen=True, slots=True, eq=False)
class PriceTable:
    """A validated price table: list prices per base id, the two rules, and precomputed rates.

    Build it with :meth:`load`; the constructor is for tests and code that makes tables on the fly.
    """

    name: str
    """The table's ``[meta] name`` for the built-in table, the file's path for a user's table."""
    models: Mapping[str, Price]
    """Base model id -> list price (on-demand, global endpoint)."""
    surcharged: frozenset[str] = frozenset()
    """Base ids whose regional profiles carry ``regional_surcharge``."""
    regional_surcharge: float = DEFAULT_REGIONAL_SURCHARGE
    batch_discount: float = DEFAULT_BATCH_DISCOUNT
    source: str = ""
    _rates: Mapping[str, Mapping[str, Rates]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rates: dict[str, dict[str, Rates]] = {lane: {} for lane in LANES}
        for lane in LANES:
            for model_id in self._priceable_ids():
                rates[lane][model_id] = self.price_of(model_id, lane=lane).per_token()
        object.__setattr__(self, "models", MappingProxyType(dict(self.models)))
        object.__setattr__(self, "_rates", MappingProxyType(rates))

    def _priceable_ids(self) -> list[str]:
        return [
            model_id
            for base_id in self.models
            for model_id in (base_id, *(f"{g}.{base_id}" for g in catalog.GEOGRAPHIES))
        ]

    # -- loading -------------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        """The built-in table (``path`` None or empty) or the user's file, which replaces it whole.

        Raises :class:`SpecError` naming the file and the key when the file is missing or wrong.
        """
        if path is None or str(path) == "":
            return _builtin()
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SpecError(f"{path.absolute()}: price table not found") from None
        except OSError as exc:
            raise SpecError(f"{path.absolute()}: cannot read the price table ({exc.strerror})") from None
        return cls.from_toml(text, origin=str(path), name=str(path))

    @classmethod
    def from_toml(cls, text: str, *, origin: str, name: str | None = None) -> PriceTable:
        """Parse and check a price table; ``origin`` names it in errors, ``name`` overrides its name."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"{origin}: not valid TOML ({exc})") from None
        return cls.from_dict(data, origin=origin, name=name)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str, name: str | None = None) -> PriceTable:
        """Check a decoded price table. Every error names ``origin`` and the offending key."""
        unknown = set(data) - {"meta", "rules", "models"}
        if unknown:
            raise SpecError(
                f"{origin}: unknown top-level key {sorted(unknown)[0]!r} (expected meta, rules, models)"
            )
        meta = _table(data, "meta", origin)
        rules = _table(data, "rules", origin)
        models_raw = _table(data, "models", origin)
        unknown_rules = set(rules) - {"regional_surcharge", "batch_discount"}
        if unknown_rules:
            raise SpecError(
                f"{origin}: rules.{sorted(unknown_rules)[0]} is not a rule "
                "(expected regional_surcharge, batch_discount)"
            )
        surcharge = _number(rules, "regional_surcharge", DEFAULT_REGIONAL_SURCHARGE, origin, "rules")
        discount = _number(rules, "batch_discount", DEFAULT_BATCH_DISCOUNT, origin, "rules")
        if discount >= 1:
            raise SpecError(f"{origin}: rules.batch_discount must be below 1 (got {discount})")

        if not models_raw:
            raise SpecError(f"{origin}: [models] is missing or empty; a price table needs at least one model")

        models: dict[str, Price] = {}
        surcharged: set[str] = set()
        for base_id, entry in models_raw.items():
            key = f'models."{base_id}"'
            prefix, _, rest = base_id.partition(".")
            if prefix in catalog.GEOGRAPHIES and rest:
                raise SpecError(f"{origin}: {key}: price the base model id {rest!r}, not a profile id")
            if not isinstance(entry, dict):
                raise SpecError(f"{origin}: {key} must be a table of input, output, cache_write, cache_read")
            extra = set(entry) - _MODEL_KEYS
            if extra:
                raise SpecError(
                    f"{origin}: {key}.{sorted(extra)[0]} is not a price key "
                    f"(expected {', '.join(PRICE_KEYS)})"
                )
            input_, output, cache_write, cache_read = (
                _number(entry, k, None, origin, key) for k in PRICE_KEYS
            )
            source = entry.get("source", "")
            if not isinstance(source, str):
                raise SpecError(f"{origin}: {key}.source must be a string")
            models[base_id] = Price(input_, output, cache_write, cache_read, source=source)
            if _surcharged(base_id, entry, origin, key):
                surcharged.add(base_id)

        meta_name = meta.get("name")
        if name is None:
            if not isinstance(meta_name, str) or not meta_name:
                raise SpecError(f"{origin}: meta.name must be a non-empty string")
            name = meta_name
        source_note = meta.get("source", "")
        return cls(
            name=name,
            models=models,
            surcharged=frozenset(surcharged),
            regional_surcharge=surcharge,
            batch_discount=discount,
            source=source_note if isinstance(source_note, str) else "",
        )

    # -- look-ups ------------------------------------------------------------------------------------

    def __contains__(self, model_id: object) -> bool:
        """Whether ``model_id`` (base or profile id) can be priced by this table."""
        return isinstance(model_id, str) and model_id in self._rates["on_demand"]

    def split(self, model_id: str) -> tuple[str, str | None]:
        """``(base id, geography)`` of a profile id, ``(base id, None)`` of a base id.

        Raises :class:`SpecError` when the table has no price for the model.
        """
        if model_id in self.models:
            return model_id, None
        prefix, _, rest = model_id.partition(".")
        if prefix in catalog.GEOGRAPHIES and rest in self.models:
            return rest, prefix
        raise self._missing(model_id)

    def base_price(self, model_id: str) -> Price:
        """The list price (on-demand, global endpoint) of the model behind ``model_id``."""
        return self.models[self.split(model_id)[0]]

    def is_surcharged(self, model_id: str) -> bool:
        """Whether calls to ``model_id`` pay the regional surcharge (not ``global.``, flagged model)."""
        base_id, geography = self.split(model_id)
        return geography != "global" and base_id in self.surcharged

    def price_of(self, model_id: str, *, lane: str = "on_demand") -> Price:
        """What ``model_id`` costs per million tokens on ``lane``, surcharge and batch discount applied."""
        _check_lane(lane)
        factor = 1.0 + self.regional_surcharge if self.is_surcharged(model_id) else 1.0
        if lane == "batch":
            factor *= 1.0 - self.batch_discount
        return self.base_price(model_id).scaled(factor)

    def rates(self, model_id: str, *, lane: str = "on_demand") -> Rates:
        """USD per token of each kind of ``model_id`` on ``lane``."""
        try:
            return self._rates[lane][model_id]
        except KeyError:
            _check_lane(lane)
            raise self._missing(model_id) from None

    def cost(self, model_id: str, usage: Usage, *, lane: str = "on_demand") -> float:
        """USD that ``usage`` cost on ``model_id`` (profile or base id) in ``lane``.

        Called once per result row: one look-up in the precomputed rates, four multiplications.
        """
        try:
            r = self._rates[lane][model_id]
        except KeyError:
            _check_lane(lane)
            raise self._missing(model_id) from None
        return (
            usage.input_tokens * r.input_tokens
            + usage.output_tokens * r.output_tokens
            + usage.cache_creation_input_tokens * r.cache_creation_input_tokens
            + usage.cache_read_input_tokens * r.cache_read_input_tokens
        )

    def _missing(self, model_id: str) -> SpecError:
        return SpecError(
            f"price table {self.name}: no price for model {model_id!r}; "
            'add a [models."<base model id>"] entry to a price table and pass it with prices = FILE'
        )


@functools.cache
def _builtin() -> PriceTable:
    """The packaged table, parsed once per process (it cannot change while we run)."""
    import importlib.resources  # here, not at the top: `stats` rarely needs the table (start-up)

    resource = importlib.resources.files("runner").joinpath(BUILTIN_FILE)
    return PriceTable.from_toml(resource.read_text(encoding="utf-8"), origin=f"runner/{BUILTIN_FILE}")


def _check_lane(lane: str) -> None:
    if lane not in LANES:
        raise ValueError(f"unknown lane {lane!r} (expected one of {', '.join(LANES)})")


def _table(data: Mapping[str, Any], key: str, origin: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SpecError(f"{origin}: {key} must be a table ([{key}])")
    return value


def _number(table: Mapping[str, Any], key: str, default: float | None, origin: str, where: str) -> float:
    """A non-negative finite number at ``where.key``; TOML booleans are not numbers here."""
    if key not in table:
        if default is None:
            raise SpecError(f"{origin}: {where}.{key} is missing (USD per million tokens)")
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{origin}: {where}.{key} must be a number (got {value!r})")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise SpecError(f"{origin}: {where}.{key} must be a non-negative number (got {value!r})")
    return number


def _surcharged(base_id: str, entry: Mapping[str, Any], origin: str, key: str) -> bool:
    """The entry's own ``regional_surcharge`` flag, else the catalogue's, else no surcharge."""
    if "regional_surcharge" in entry:
        flag = entry["regional_surcharge"]
        if not isinstance(flag, bool):
            raise SpecError(f"{origin}: {key}.regional_surcharge must be true or false")
        return flag
    try:
        model, _ = catalog.find_model(base_id)
    except catalog.UnknownModelError:
        return False
    return model.regional_surcharge
