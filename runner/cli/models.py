"""``bedrock-batch models``: the catalogue, its prices, and what the account actually sees.

The catalogue (``runner.catalog``, with a user catalogue merged over it) is what the runner believes;
an account may lack a model (not enabled, region without it) or see one the catalogue does not know
yet. With credentials (or an ``--endpoint-url``, the emulator) the command asks the control plane,
ListFoundationModels and ListInferenceProfiles, and marks each catalogue entry visible or missing; and
GetModelInvocationLoggingConfiguration, per region, to say whether invocation logging is on (AWS
recommends keeping 30 days of invocation logs). Any failure of those checks (no credentials,
AccessDenied, endpoint unreachable) is one note, never a traceback: the catalogue is still worth
printing. Credentials are only resolved, never printed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click
from rich.console import Console
from rich.table import Table

from runner import awsconfig, catalog
from runner.errors import BatchError
from runner.exit_codes import EXIT_SPEC_INVALID
from runner.pricing import PriceTable

Mark = Literal["visible", "missing", "n/a"]
"""A profile the region should list and does (visible), should and does not (missing), or is not
expected to list (n/a: a geographic profile of another geography)."""

CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 15
MARKS: Mapping[str | None, str] = {"visible": "✓", "missing": "✗ missing", "n/a": "-", None: ""}


@dataclass(frozen=True, slots=True)
class AccountView:
    """What the control plane of one region lists: Anthropic models and system inference profiles."""

    region: str
    models: Mapping[str, str]
    """Base model id -> lifecycle status (ACTIVE, LEGACY)."""
    profiles: frozenset[str]


@dataclass(frozen=True, slots=True)
class AccountCheck:
    """The account check's outcome: a view, or the one-line reason there is none."""

    view: AccountView | None
    note: str | None


def resolve_region(region: str | None) -> tuple[str, str]:
    """The region and where it came from: ``--region``, else the environment, the profile, the default."""
    setting = awsconfig.resolve_region(region)
    return setting.value, setting.source


def has_credentials() -> bool:
    """Whether the default AWS provider chain finds credentials (their values are not looked at)."""
    import boto3

    try:
        return boto3.Session().get_credentials() is not None
    except Exception:  # a broken profile or config file is "no credentials" for this purpose
        return False


def fetch_account_view(region: str, endpoint_url: str | None, *, client: Any = None) -> AccountView:
    """Call ListFoundationModels(byProvider=anthropic) and ListInferenceProfiles(SYSTEM_DEFINED).

    ``client`` is a ``bedrock`` control-plane client (tests pass a stubbed one). botocore's own
    retries are off: this is a look, not a job, and an unreachable endpoint should fail fast.
    """
    if client is None:
        from runner.bedrock import control_client

        client = control_client(
            region, endpoint_url, connect_timeout_s=CONNECT_TIMEOUT_S, read_timeout_s=READ_TIMEOUT_S
        )
    listed = client.list_foundation_models(byProvider="anthropic")
    models = {
        m["modelId"]: m.get("modelLifecycle", {}).get("status", "") for m in listed.get("modelSummaries", [])
    }
    profiles: set[str] = set()
    kwargs: dict[str, Any] = {"typeEquals": "SYSTEM_DEFINED"}
    while True:
        page = client.list_inference_profiles(**kwargs)
        profiles.update(p["inferenceProfileId"] for p in page.get("inferenceProfileSummaries", []))
        token = page.get("nextToken")
        if not token:
            break
        kwargs["nextToken"] = token
    return AccountView(region=region, models=models, profiles=frozenset(profiles))


def check_account(region: str, endpoint_url: str | None, *, client: Any = None) -> AccountCheck:
    """The account view, or a one-line note saying why there is none (never an exception)."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    if client is None and not endpoint_url and not has_credentials():
        return AccountCheck(None, "no AWS credentials found: showing the catalogue only")
    where = endpoint_url or f"Bedrock in {region}"
    try:
        return AccountCheck(fetch_account_view(region, endpoint_url, client=client), None)
    except NoCredentialsError:
        return AccountCheck(None, f"no AWS credentials found, so {where} was not asked")
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code") or "error"
        message = " ".join(str(error.get("Message", "")).split())
        return AccountCheck(None, f"{where} refused the listing: {code}: {message}".rstrip(": "))
    except BotoCoreError as exc:
        return AccountCheck(None, f"could not reach {where}: {' '.join(str(exc).split())}")


@dataclass(frozen=True, slots=True)
class LoggingCheck:
    """Whether Bedrock model invocation logging is on in one region (``enabled`` None: unknown)."""

    region: str
    enabled: bool | None
    destinations: tuple[str, ...] = ()
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "destinations": list(self.destinations), "note": self.note}

    def line(self) -> str:
        if self.enabled is None:
            return f"Invocation logging in {self.region}: unknown ({self.note})"
        if self.enabled:
            return f"Invocation logging in {self.region}: on ({', '.join(self.destinations)})"
        return (
            f"Invocation logging in {self.region}: OFF. AWS recommends keeping 30 days of invocation "
            "logs to understand usage and investigate abuse; README.md, 'Invocation logging', says how."
        )


def check_logging(region: str, endpoint_url: str | None, *, client: Any = None) -> LoggingCheck:
    """GetModelInvocationLoggingConfiguration in ``region``, as a :class:`LoggingCheck` (never raises)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from runner.bedrock import logging_destinations

    if client is None and not endpoint_url and not has_credentials():
        return LoggingCheck(region, None, note="no AWS credentials found")
    try:
        if client is None:
            from runner.bedrock import control_client

            client = control_client(
                region, endpoint_url, connect_timeout_s=CONNECT_TIMEOUT_S, read_timeout_s=READ_TIMEOUT_S
            )
        answer = client.get_model_invocation_logging_configuration()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        message = " ".join(str(error.get("Message", "")).split())
        return LoggingCheck(region, None, note=f"{error.get('Code') or 'error'}: {message}".rstrip(": "))
    except BotoCoreError as exc:
        return LoggingCheck(region, None, note=" ".join(str(exc).split()))
    destinations = logging_destinations(answer.get("loggingConfig"))
    return LoggingCheck(region, bool(destinations), destinations)


def profile_mark(view: AccountView | None, profile_id: str, geography: str) -> Mark | None:
    """How a catalogue profile fares in the account view (None: no view)."""
    if view is None:
        return None
    if profile_id in view.profiles:
        return "visible"
    expected = geography == "global" or geography in catalog.region_geographies(view.region)
    return "missing" if expected else "n/a"


def catalogue_entries(prices: PriceTable, view: AccountView | None) -> list[dict[str, Any]]:
    """One JSON-ready entry per catalogue model: ids, limits, prices and, with a view, visibility."""
    entries = []
    for model in catalog.models():
        price = prices.base_price(model.base_id) if model.base_id in prices else None
        profiles = {}
        for geography in catalog.geographies():
            if geography in model.geographies:
                profile_id = model.profile_id(geography)
                profiles[geography] = {
                    "id": profile_id,
                    "account": profile_mark(view, profile_id, geography),
                }
        entries.append(
            {
                "name": model.name,
                "base_id": model.base_id,
                "profiles": profiles,
                "deprecated": model.deprecated.isoformat() if model.deprecated else None,
                "deprecation_passed": catalog.is_deprecated(model),
                "max_output_tokens": model.max_output_tokens,
                "context_window": model.context_window,
                "long_context_beta": model.long_context_beta,
                "output_burndown": model.output_burndown,
                "burndown_verified": model.burndown_verified,
                "regional_surcharge": model.regional_surcharge and price is not None,
                "price_usd_per_million": None
                if price is None
                else {
                    "input": price.input,
                    "output": price.output,
                    "cache_write": price.cache_write,
                    "cache_read": price.cache_read,
                    "source": price.source,
                },
                "account": None
                if view is None
                else {
                    "visible": model.base_id in view.models,
                    "lifecycle": view.models.get(model.base_id),
                },
            }
        )
    return entries


@click.command("models")
@click.option(
    "--region",
    "regions",
    metavar="R",
    multiple=True,
    help="Region to ask (else AWS_REGION, AWS_DEFAULT_REGION, the profile's, us-east-1); repeat it to "
    "check invocation logging in several regions (the first is the one whose models are listed).",
)
@click.option("--profile", metavar="NAME", help="AWS profile of ~/.aws/config to ask with (AWS_PROFILE).")
@click.option("--endpoint-url", metavar="URL", help="Ask this endpoint instead of AWS (the emulator).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object and nothing else.")
@click.option(
    "--prices",
    metavar="FILE",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Show prices from this price table instead of the built-in one.",
)
@click.option(
    "--catalog",
    "catalog_file",
    metavar="FILE",
    type=click.Path(path_type=Path, dir_okay=False),
    help="User catalogue (TOML, docs/catalog.md) merged over the built-in one [$BEDROCK_BATCH_CATALOG].",
)
def models_command(
    regions: tuple[str, ...],
    profile: str | None,
    endpoint_url: str | None,
    as_json: bool,
    prices: Path | None,
    catalog_file: Path | None,
) -> None:
    """The Claude models on Bedrock: ids, profiles, limits, prices, what the account sees, and whether
    model invocation logging is on in each region."""
    try:
        awsconfig.use_profile(profile)
        active = catalog.activate(catalog_file)
        table = PriceTable.load(prices)
        region, region_source = resolve_region(regions[0] if regions else None)
    except BatchError as exc:
        click.echo(f"error: {' '.join(str(exc).split())}", err=True)
        raise SystemExit(EXIT_SPEC_INVALID) from None
    asked = list(dict.fromkeys((region, *regions[1:])))
    clients = _clients(asked, endpoint_url)
    check = check_account(region, endpoint_url, client=clients.get(region))
    logging_checks = [check_logging(r, endpoint_url, client=clients.get(r)) for r in asked]
    entries = catalogue_entries(table, check.view)
    known = {m.base_id for m in catalog.models()}
    unknown = sorted(set(check.view.models) - known) if check.view else []
    app_profiles = [
        {
            "arn": p.arn,
            "name": p.name,
            "model": p.model.base_id,
            "geography": p.geography,
            "region": p.region,
        }
        for p in active.profiles.values()
    ]
    if as_json:
        out = {
            "region": region,
            "region_source": region_source,
            "price_table": table.name,
            "catalog": active.origin,
            "account": {
                "checked": check.view is not None,
                "endpoint_url": endpoint_url,
                "note": check.note,
                "not_in_catalogue": unknown,
            },
            "invocation_logging": {c.region: c.to_dict() for c in logging_checks},
            "models": entries,
            "application_profiles": app_profiles,
        }
        click.echo(json.dumps(out, indent=2))
        return
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=max(console.width, 200))
    render(console, entries, table, region=region, region_source=region_source, check=check)
    if unknown:
        console.print(f"The account also lists models the catalogue does not know: {', '.join(unknown)}")
    if active.origin != catalog.BUILTIN.origin:
        console.print(f"Catalogue: built-in + {active.origin}")
    for p in app_profiles:
        via = p["geography"] or f"in-region {p['region']}"
        console.print(f"Application profile {p['name'] or p['arn']}: {p['model']} via {via} ({p['arn']})")
    for c in logging_checks:
        console.print(c.line())


def _clients(regions: list[str], endpoint_url: str | None) -> dict[str, Any]:
    """One control-plane client per region, shared by the checks (none without credentials: the
    checks then say so)."""
    if not endpoint_url and not has_credentials():
        return {}
    from runner.bedrock import control_client

    return {
        r: control_client(r, endpoint_url, connect_timeout_s=CONNECT_TIMEOUT_S, read_timeout_s=READ_TIMEOUT_S)
        for r in regions
    }


def render(
    console: Console,
    entries: list[dict[str, Any]],
    prices: PriceTable,
    *,
    region: str,
    region_source: str,
    check: AccountCheck,
) -> None:
    """The catalogue as a rich table, with an account column when the account was asked."""
    checked = check.view is not None
    title = f"Claude on Amazon Bedrock, region {region} ({region_source})"
    table = Table(title=title, title_justify="left", show_lines=True)
    table.add_column("model")
    table.add_column("base id", overflow="fold")
    table.add_column("profiles" + (" (account)" if checked else ""))
    table.add_column("deprecated")
    table.add_column("max output", justify="right")
    table.add_column("burndown", justify="right")
    table.add_column("USD / M tokens\nin / out / cache w / cache r", justify="right")
    if checked:
        table.add_column("account")
    for e in entries:
        profiles = "\n".join(f"{g}. {MARKS[p['account']]}".rstrip() for g, p in e["profiles"].items())
        deprecated = e["deprecated"] or ""
        if e["deprecation_passed"]:
            deprecated += " (passed)"
        burndown = f"{e['output_burndown']:g}x" + ("" if e["burndown_verified"] else " (unverified)")
        price = e["price_usd_per_million"]
        if price is None:
            price_text = "not in price table"
        else:
            price_text = " / ".join(f"{price[k]:g}" for k in ("input", "output", "cache_write", "cache_read"))
            if e["regional_surcharge"]:
                price_text += f"\nregional +{prices.regional_surcharge:.0%}"
            if price["source"] == "anthropic-list":
                price_text += "\n(Anthropic list price)"
        row = [
            e["name"],
            e["base_id"],
            profiles,
            deprecated,
            f"{e['max_output_tokens']:,}",
            burndown,
            price_text,
        ]
        if checked:
            account = e["account"]
            row.append(f"✓ {account['lifecycle'] or ''}".strip() if account["visible"] else "✗ missing")
        table.add_row(*row)
    console.print(table)
    console.print(
        f"Profile id = <geography>.<base id>. Prices: {prices.name}, global endpoint, on-demand; "
        f"batch {1 - prices.batch_discount:.0%} of it."
    )
    if checked:
        console.print(
            "'-': a geographic profile this region cannot call; ask from a region of that geography."
        )
    if check.note:
        console.print(f"Note: {check.note}")
