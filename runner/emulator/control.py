"""The control plane's read side (``bedrock`` client), built from the catalogue.

``ListFoundationModels``, ``GetFoundationModel``, ``ListInferenceProfiles`` and ``GetInferenceProfile``
with the shapes of ``botocore/data/bedrock/2023-04-20/service-2.json``. What a region lists follows the
(active) catalogue: every model, the inference profiles a region may call (``global.`` from any region, a
geographic profile only from a region of its geography), and the catalogue's application inference
profiles of that region, so ``models --region`` sees what the runtime accepts. Pure functions of
(region, query).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from runner import catalog
from runner.catalog import AppProfile, Model, UnknownModelError, find_model, is_deprecated
from runner.emulator.errors import BedrockError, validation

ACCOUNT_ID = "123456789012"
"""The account every emulated ARN names."""

_CREATED = "2025-01-01T00:00:00Z"


def foundation_model_arn(region: str, model: Model) -> str:
    return f"arn:aws:bedrock:{region}::foundation-model/{model.base_id}"


def model_summary(region: str, model: Model, today: dt.date | None = None) -> dict[str, Any]:
    return {
        "modelArn": foundation_model_arn(region, model),
        "modelId": model.base_id,
        "modelName": model.name,
        "providerName": "Anthropic",
        "inputModalities": ["TEXT", "IMAGE"],
        "outputModalities": ["TEXT"],
        "responseStreamingSupported": True,
        "customizationsSupported": [],
        "inferenceTypesSupported": ["ON_DEMAND"],
        "modelLifecycle": {"status": "LEGACY" if is_deprecated(model, today) else "ACTIVE"},
    }


def list_foundation_models(region: str, query: Mapping[str, str]) -> dict[str, Any]:
    """``GET /foundation-models``; the filters Claude cannot match give an empty list, as on AWS."""
    provider = query.get("byProvider")
    if provider is not None and provider.lower() != "anthropic":
        return {"modelSummaries": []}
    if query.get("byOutputModality", "TEXT") != "TEXT":
        return {"modelSummaries": []}
    if query.get("byInferenceType", "ON_DEMAND") != "ON_DEMAND" or "byCustomizationType" in query:
        return {"modelSummaries": []}
    return {"modelSummaries": [model_summary(region, m) for m in catalog.models()]}


def get_foundation_model(region: str, model_id: str) -> dict[str, Any]:
    """``GET /foundation-models/{modelIdentifier}``."""
    try:
        model, geography = find_model(model_id.rsplit("/", 1)[-1])
    except UnknownModelError:
        model, geography = None, None
    if model is None or geography is not None:
        raise BedrockError("ResourceNotFoundException", f"The model {model_id} does not exist.")
    return {"modelDetails": model_summary(region, model)}


def _profile_regions(geography: str) -> tuple[str, ...]:
    regions = catalog.geography_regions()
    if geography == "global":
        return tuple(dict.fromkeys(r for listed in regions.values() for r in listed))
    return regions[geography]


def callable_from(geography: str, region: str) -> bool:
    """Whether ``region`` may call ``geography``'s inference profiles."""
    return geography == "global" or region in catalog.geography_regions().get(geography, ())


def app_profile_summary(profile: AppProfile) -> dict[str, Any]:
    """An application inference profile of the catalogue, as ``ListInferenceProfiles`` shows it."""
    regions = (profile.region,) if profile.geography is None else _profile_regions(profile.geography)
    return {
        "inferenceProfileName": profile.name or profile.arn.rsplit("/", 1)[-1],
        "description": f"Application inference profile for {profile.model.name}.",
        "createdAt": _CREATED,
        "updatedAt": _CREATED,
        "inferenceProfileArn": profile.arn,
        "models": [{"modelArn": foundation_model_arn(r, profile.model)} for r in regions],
        "inferenceProfileId": profile.arn.rsplit("/", 1)[-1],
        "status": "ACTIVE",
        "type": "APPLICATION",
    }


def profile_summary(region: str, model: Model, geography: str) -> dict[str, Any]:
    profile_id = model.profile_id(geography)
    label = geography.upper()
    return {
        "inferenceProfileName": f"{label} Anthropic {model.name}",
        "description": f"Routes requests to Anthropic {model.name} in {label.lower()} regions.",
        "createdAt": _CREATED,
        "updatedAt": _CREATED,
        "inferenceProfileArn": f"arn:aws:bedrock:{region}:{ACCOUNT_ID}:inference-profile/{profile_id}",
        "models": [{"modelArn": foundation_model_arn(r, model)} for r in _profile_regions(geography)],
        "inferenceProfileId": profile_id,
        "status": "ACTIVE",
        "type": "SYSTEM_DEFINED",
    }


def list_inference_profiles(region: str, query: Mapping[str, str]) -> dict[str, Any]:
    """``GET /inference-profiles`` with ``type`` (SYSTEM_DEFINED / APPLICATION) and pagination."""
    kind = query.get("type", "SYSTEM_DEFINED")
    if kind not in ("SYSTEM_DEFINED", "APPLICATION"):
        raise validation(
            f"1 validation error detected: Value '{kind}' at 'typeEquals' failed to satisfy constraint"
        )
    summaries = (
        [app_profile_summary(p) for p in catalog.current().profiles.values() if p.region == region]
        if kind == "APPLICATION"
        else [
            profile_summary(region, m, g)
            for m in catalog.models()
            for g in sorted(m.geographies)
            if callable_from(g, region)
        ]
    )
    try:
        start = int(query.get("nextToken", "0"))
        size = int(query.get("maxResults", "1000"))
    except ValueError as exc:
        raise validation("nextToken or maxResults is not valid.") from exc
    if start < 0 or not 1 <= size <= 1000:
        raise validation("maxResults must be between 1 and 1000.")
    page: dict[str, Any] = {"inferenceProfileSummaries": summaries[start : start + size]}
    if start + size < len(summaries):
        page["nextToken"] = str(start + size)
    return page


def get_inference_profile(region: str, profile_id: str) -> dict[str, Any]:
    """``GET /inference-profiles/{inferenceProfileIdentifier}``."""
    for app in catalog.current().profiles.values():
        if profile_id in (app.arn, app.arn.rsplit("/", 1)[-1]) and app.region == region:
            return app_profile_summary(app)
    ident = profile_id.rsplit("/", 1)[-1]
    try:
        model, geography = find_model(ident)
    except UnknownModelError:
        model, geography = None, None
    if model is None or geography is None or geography not in model.geographies:
        raise BedrockError("ResourceNotFoundException", f"Inference profile {profile_id} not found.")
    if not callable_from(geography, region):
        raise BedrockError("ResourceNotFoundException", f"Inference profile {profile_id} not found.")
    return profile_summary(region, model, geography)
