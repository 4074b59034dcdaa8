"""What tokens cost: the price table (``runner/prices.toml`` or the user's own) and the arithmetic.

Prices change more often than code, so they are data a user can replace, and every figure the runner
prints names the table that priced it (``PriceTable.name``). The table holds list prices (on-demand,
global endpoint, USD per million tokens) per *base* model id; the two rules that turn a list price into
what a call costs live beside them:

- ``regional_surcharge``: geographic profiles (``us.``, ``eu.``, ...) and in-region base ids cost this
  much more than ``global.`` for models whose catalogue entry says so (Sonnet 4.5 and newer);
- ``batch_discount``: the ``batch`` lane (Bedrock batch inference) costs ``1 - batch_discount`` of it;
- ``long_context_threshold``: a request whose input (input, cache write and cache read tokens
  together) goes over it is billed whole at the model's ``long_context`` prices (Sonnet 4 / 4.5 with
  the 1M-context beta: input and cache twice, output 1.5 times the standard), surcharge and batch
  discount applied on top.

A user catalogue (:mod:`runner.catalog`) adds prices for models the table lacks (or replaces a
model's) and application inference profile ARNs, priced as the profile they copy; the table's name
then says so. ``PriceTable.cost`` runs once per result row, so the table precomputes, for every id it
can price (base id, each profile id, each ARN) and each lane, the four per-token rates; a cost is one
dict look-up, one comparison and four multiplications.
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
from runner.types import EMULATED_LANE_PREFIX, Usage

LANES: tuple[str, ...] = ("on_demand", "batch")
"""How a row was served: InvokeModel (``on_demand``) or Bedrock batch inference (``batch``). A dry
run's rows carry :data:`runner.types.EMULATED_LANE_PREFIX` before them and are priced as these."""


def base_lane(lane: str) -> str:
    """The priced lane of a row's ``lane``: ``emulated_batch`` is priced as ``batch``."""
    return lane.removeprefix(EMULATED_LANE_PREFIX)


PER_MILLION = 1_000_000
PRICE_KEYS: tuple[str, ...] = ("input", "output", "cache_write", "cache_read")
"""The four prices of a model, USD per million tokens, in the order ``Rates`` holds them."""

DEFAULT_REGIONAL_SURCHARGE = 0.10
DEFAULT_BATCH_DISCOUNT = 0.50
DEFAULT_LONG_CONTEXT_THRESHOLD = 200_000
BUILTIN_FILE = "prices.toml"


class Rates(NamedTuple):
    """USD per *token* of each kind, named as :class:`runner.types.Usage` names the counts (a price
    list's ``cache_write`` is ``cache_creation_input_tokens``)."""

    input_tokens: float
    output_tokens: float
    cache_creation_input_tokens: float
    cache_read_input_tokens: float


_MODEL_KEYS = frozenset({*PRICE_KEYS, "source", "regional_surcharge", "long_context"})
_RULES = ("regional_surcharge", "batch_discount", "long_context_threshold")


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
    long_context: Mapping[str, Price] = field(default_factory=dict)
    """Base model id -> its long-context list price, for the models that have one."""
    long_context_threshold: int = DEFAULT_LONG_CONTEXT_THRESHOLD
    aliases: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)
    """Application inference profile ARN -> (base id, geography it copies or ``None``: in-region)."""
    _rates: Mapping[str, Mapping[str, Rates]] = field(init=False, repr=False)
    _long_rates: Mapping[str, Mapping[str, Rates]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", MappingProxyType(dict(self.models)))
        object.__setattr__(self, "long_context", MappingProxyType(dict(self.long_context)))
        object.__setattr__(self, "aliases", MappingProxyType(dict(self.aliases)))
        rates: dict[str, dict[str, Rates]] = {lane: {} for lane in LANES}
        long_rates: dict[str, dict[str, Rates]] = {lane: {} for lane in LANES}
        for lane in LANES:
            for model_id in self._priceable_ids():
                rates[lane][model_id] = self.price_of(model_id, lane=lane).per_token()
                long = self.long_price_of(model_id, lane=lane)
                if long is not None:
                    long_rates[lane][model_id] = long.per_token()
        object.__setattr__(self, "_rates", MappingProxyType(rates))
        object.__setattr__(self, "_long_rates", MappingProxyType(long_rates))

    def _priceable_ids(self) -> list[str]:
        geographies = catalog.geographies()
        ids = [
            model_id
            for base_id in self.models
            for model_id in (base_id, *(f"{g}.{base_id}" for g in geographies))
        ]
        return ids + [arn for arn, (base_id, _) in self.aliases.items() if base_id in self.models]

    # -- loading -------------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        """The built-in table (``path`` None or empty) or the user's file, which replaces it whole,
        with the active catalogue's prices and application profiles merged over it.

        Raises :class:`SpecError` naming the file and the key when the file is missing or wrong.
        """
        if path is None or str(path) == "":
            table = cls.from_dict(_builtin_data(), origin=f"runner/{BUILTIN_FILE}")
        else:
            path = Path(path)
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise SpecError(f"{path.absolute()}: price table not found") from None
            except OSError as exc:
                raise SpecError(f"{path.absolute()}: cannot read the price table ({exc.strerror})") from None
            table = cls.from_toml(text, origin=str(path), name=str(path))
        return table.with_catalog(catalog.current())

    def with_catalog(self, cat: catalog.Catalog) -> PriceTable:
        """This table with a catalogue's prices (over the table's own) and its application profiles;
        the same table when the catalogue adds nothing."""
        if not (cat.prices or cat.long_context_prices or cat.profiles):
            return self
        models = dict(self.models)
        surcharged = set(self.surcharged)
        for base_id, price in cat.prices.items():
            models[base_id] = Price(**price, source=f"catalogue {cat.origin}")
            model = next((m for m in cat.models if m.base_id == base_id), None)
            if model is not None and model.regional_surcharge:
                surcharged.add(base_id)
            else:
                surcharged.discard(base_id)
        long_context = dict(self.long_context)
        for base_id, price in cat.long_context_prices.items():
            long_context[base_id] = Price(**price, source=f"catalogue {cat.origin}")
        aliases = dict(self.aliases)
        aliases.update({arn: (p.model.base_id, p.geography) for arn, p in cat.profiles.items()})
        named = bool(cat.prices or cat.long_context_prices)
        return PriceTable(
            name=f"{self.name} + {cat.origin}" if named else self.name,
            models=models,
            surcharged=frozenset(surcharged),
            regional_surcharge=self.regional_surcharge,
            batch_discount=self.batch_discount,
            source=self.source,
            long_context=long_context,
            long_context_threshold=self.long_context_threshold,
            aliases=aliases,
        )

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
        unknown_rules = set(rules) - set(_RULES)
        if unknown_rules:
            raise SpecError(
                f"{origin}: rules.{sorted(unknown_rules)[0]} is not a rule (expected {', '.join(_RULES)})"
            )
        surcharge = _number(rules, "regional_surcharge", DEFAULT_REGIONAL_SURCHARGE, origin, "rules")
        discount = _number(rules, "batch_discount", DEFAULT_BATCH_DISCOUNT, origin, "rules")
        if discount >= 1:
            raise SpecError(f"{origin}: rules.batch_discount must be below 1 (got {discount})")
        threshold = _number(rules, "long_context_threshold", DEFAULT_LONG_CONTEXT_THRESHOLD, origin, "rules")

        if not models_raw:
            raise SpecError(f"{origin}: [models] is missing or empty; a price table needs at least one model")

        models: dict[str, Price] = {}
        long_context: dict[str, Price] = {}
        surcharged: set[str] = set()
        for base_id, entry in models_raw.items():
            key = f'models."{base_id}"'
            prefix, _, rest = base_id.partition(".")
            if prefix in catalog.geographies() and rest:
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
            if "long_context" in entry:
                long = entry["long_context"]
                where = f"{key}.long_context"
                if not isinstance(long, dict) or set(long) != set(PRICE_KEYS):
                    raise SpecError(f"{origin}: {where} must be a table of exactly {', '.join(PRICE_KEYS)}")
                li, lo, lw, lr = (_number(long, k, None, origin, where) for k in PRICE_KEYS)
                long_context[base_id] = Price(li, lo, lw, lr, source=source)
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
            long_context=long_context,
            long_context_threshold=int(threshold),
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
        alias = self.aliases.get(model_id)
        if alias is not None and alias[0] in self.models:
            return alias
        prefix, _, rest = model_id.partition(".")
        if prefix in catalog.geographies() and rest in self.models:
            return rest, prefix
        raise self._missing(model_id)

    def base_price(self, model_id: str) -> Price:
        """The list price (on-demand, global endpoint) of the model behind ``model_id``."""
        return self.models[self.split(model_id)[0]]

    def is_surcharged(self, model_id: str) -> bool:
        """Whether calls to ``model_id`` pay the regional surcharge (not ``global.``, flagged model)."""
        base_id, geography = self.split(model_id)
        return geography != "global" and base_id in self.surcharged

    def _factor(self, model_id: str, lane: str) -> float:
        lane = base_lane(lane)
        _check_lane(lane)
        factor = 1.0 + self.regional_surcharge if self.is_surcharged(model_id) else 1.0
        if lane == "batch":
            factor *= 1.0 - self.batch_discount
        return factor

    def price_of(self, model_id: str, *, lane: str = "on_demand") -> Price:
        """What ``model_id`` costs per million tokens on ``lane``, surcharge and batch discount applied."""
        return self.base_price(model_id).scaled(self._factor(model_id, lane))

    def long_price_of(self, model_id: str, *, lane: str = "on_demand") -> Price | None:
        """What a request over :attr:`long_context_threshold` costs on ``model_id`` per million tokens
        (``None``: the model has no long-context prices, so the standard ones apply)."""
        long = self.long_context.get(self.split(model_id)[0])
        return None if long is None else long.scaled(self._factor(model_id, lane))

    def is_long(self, usage: Usage) -> bool:
        """Whether a request with ``usage`` went over the long-context threshold (its input, cache
        writes and cache reads together)."""
        return (
            usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens
            > self.long_context_threshold
        )

    def _lane_rates(self, table: Mapping[str, Mapping[str, Rates]], lane: str) -> Mapping[str, Rates]:
        rates = table.get(lane)
        if rates is None:
            lane = base_lane(lane)  # a dry run's rows: emulated_on_demand
            _check_lane(lane)
            rates = table[lane]
        return rates

    def rates(self, model_id: str, *, lane: str = "on_demand") -> Rates:
        """USD per token of each kind of ``model_id`` on ``lane`` (standard, not long-context)."""
        try:
            return self._lane_rates(self._rates, lane)[model_id]
        except KeyError:
            raise self._missing(model_id) from None

    def long_rates(self, model_id: str, *, lane: str = "on_demand") -> Rates | None:
        """USD per token of a long-context request on ``model_id``; ``None`` if it has no such prices."""
        if model_id not in self:
            raise self._missing(model_id)
        return self._lane_rates(self._long_rates, lane).get(model_id)

    def cost(self, model_id: str, usage: Usage, *, lane: str = "on_demand") -> float:
        """USD that ``usage`` cost on ``model_id`` (profile, base id or ARN) in ``lane``: at the
        long-context rates when the request went over the threshold and the model has them.

        Called once per result row: one look-up in the precomputed rates, four multiplications.
        """
        try:
            r = self._rates[lane][model_id]
        except KeyError:
            r = self.rates(model_id, lane=lane)
        if (
            usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens
            > self.long_context_threshold
        ):
            r = self._lane_rates(self._long_rates, lane).get(model_id, r)
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
def _builtin_data() -> Mapping[str, Any]:
    """The packaged table's TOML, parsed once per process (checked by ``from_dict`` on each load,
    since which models it surcharges depends on the active catalogue)."""
    import importlib.resources  # here, not at the top: `stats` rarely needs the table (start-up)

    resource = importlib.resources.files("runner").joinpath(BUILTIN_FILE)
    return MappingProxyType(tomllib.loads(resource.read_text(encoding="utf-8")))


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
