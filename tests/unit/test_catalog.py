"""The catalogue: Australia, and a user catalogue file merged over the built-in one."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner import catalog
from runner.errors import SpecError
from runner.pricing import PriceTable
from runner.routing import plan_routes
from runner.spec import JobSpec, spec_from_dict
from runner.types import Usage

SONNET_45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"
SONNET_4 = "anthropic.claude-sonnet-4-20250514-v1:0"
HAIKU_45 = "anthropic.claude-haiku-4-5-20251001-v1:0"
NEW_MODEL = "anthropic.claude-sonnet-5-20260301-v1:0"
ARN = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4"

USER_CATALOG = f"""
[regions]
ca = ["ca-central-1"]

[models."{NEW_MODEL}"]
name = "Claude Sonnet 5"
geographies = ["global", "us", "ca"]
max_output_tokens = 128000
context_window = 400000
output_burndown = 3
regional_surcharge = true
prices = {{ input = 4.0, output = 20.0, cache_write = 5.0, cache_read = 0.4 }}

[models."{SONNET_4}"]
output_burndown = 4.5

[profiles."{ARN}"]
model = "{SONNET_45}"
geography = "us"
name = "reviews-team-a"
"""


def spec(model: dict[str, object], **request: object) -> JobSpec:
    return spec_from_dict(
        {
            "job": {"input": "in.parquet", "output": "out"},
            "model": model,
            "columns": {"prompt": "text"},
            "request": {"max_tokens": 16, **request},
        },
        source="jobs/t.toml",
    )


def write_catalog(tmp_path: Path, text: str = USER_CATALOG) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(text, encoding="utf-8")
    return path


class TestAustralia:
    def test_models_with_au_profiles(self) -> None:
        """Sonnet 4.5 and Haiku 4.5 have au. profiles; Sonnet 4 keeps apac."""
        assert "au" in catalog.find_model(SONNET_45)[0].geographies
        assert "au" in catalog.find_model(HAIKU_45)[0].geographies
        assert "au" not in catalog.find_model(SONNET_4)[0].geographies
        assert catalog.find_model(f"au.{SONNET_45}") == (catalog.find_model(SONNET_45)[0], "au")

    def test_sydney_calls_the_narrowest_geography_the_model_has(self) -> None:
        """From ap-southeast-2, Sonnet 4.5's home geography is au and Sonnet 4's is apac."""
        assert catalog.region_geography("ap-southeast-2", catalog.find_model(SONNET_45)[0]) == "au"
        assert catalog.region_geography("ap-southeast-2", catalog.find_model(SONNET_4)[0]) == "apac"
        assert catalog.region_geographies("ap-southeast-2") == ("au", "apac")

    def test_residency_au(self) -> None:
        """residency = "au" is a valid spec and routes only through au. from an Australian region."""
        s = spec({"id": SONNET_45, "region": "ap-southeast-2", "residency": "au"})
        routes = plan_routes(s.model.id, region=s.region, residency=s.model.residency)
        assert [(r.model_id, r.region) for r in routes] == [(f"au.{SONNET_45}", "ap-southeast-2")]

    def test_default_routes_from_sydney(self) -> None:
        """Without endpoints, Sonnet 4.5 from Sydney routes global, then au."""
        routes = plan_routes(SONNET_45, region="ap-southeast-2")
        assert [r.name for r in routes] == ["global@ap-southeast-2", "au@ap-southeast-2"]

    def test_au_profile_id_is_accepted(self) -> None:
        """An au. profile id is a valid [model] id, priced with the regional surcharge."""
        spec({"id": f"au.{HAIKU_45}"})
        table = PriceTable.load()
        usage = Usage(1_000, 100)
        assert table.cost(f"au.{HAIKU_45}", usage) == pytest.approx(
            table.cost(f"global.{HAIKU_45}", usage) * 1.1
        )


class TestUserCatalog:
    def test_a_new_model_geography_and_prices(self, tmp_path: Path) -> None:
        """A model, a geography and prices from the file: routes, limits and costs follow them."""
        active = catalog.activate(write_catalog(tmp_path))
        model, _ = catalog.find_model(f"ca.{NEW_MODEL}")
        assert (model.name, model.max_output_tokens, model.context_window) == (
            "Claude Sonnet 5",
            128000,
            400000,
        )
        assert model.output_burndown == 3.0 and not model.burndown_verified
        assert "ca" in catalog.geographies()
        routes = plan_routes(NEW_MODEL, region="ca-central-1")
        assert [r.name for r in routes] == ["global@ca-central-1", "ca@ca-central-1"]
        table = PriceTable.load()
        assert active.origin in table.name
        assert table.cost(f"global.{NEW_MODEL}", Usage(1_000_000)) == pytest.approx(4.0)
        assert table.cost(f"ca.{NEW_MODEL}", Usage(1_000_000)) == pytest.approx(4.4)

    def test_known_model_keys_are_replaced(self, tmp_path: Path) -> None:
        """A known model keeps what the file does not name and takes what it does."""
        catalog.activate(write_catalog(tmp_path))
        sonnet_4 = catalog.find_model(SONNET_4)[0]
        assert sonnet_4.output_burndown == 4.5
        assert sonnet_4.long_context_beta == "context-1m-2025-08-07"

    def test_an_application_profile_arn(self, tmp_path: Path) -> None:
        """An application inference profile ARN is a model id: one route in its region, priced as the
        profile it copies."""
        catalog.activate(write_catalog(tmp_path))
        s = spec({"id": ARN})
        (route,) = plan_routes(s.model.id, region="eu-west-1")
        assert (route.model_id, route.region, route.geography) == (ARN, "us-east-1", "us")
        table = PriceTable.load()
        usage = Usage(1_000, 100)
        assert table.cost(ARN, usage) == pytest.approx(table.cost(f"us.{SONNET_45}", usage))

    def test_an_application_profile_outside_residency(self, tmp_path: Path) -> None:
        """residency = "eu" refuses a profile that routes through us."""
        catalog.activate(write_catalog(tmp_path))
        with pytest.raises(SpecError, match="outside `residency`"):
            plan_routes(ARN, region="us-east-1", residency="eu")

    def test_the_spec_names_the_catalogue(self, tmp_path: Path) -> None:
        """[model] catalog makes the file's models valid ids in that spec."""
        with pytest.raises(SpecError, match="not a Claude model"):
            spec({"id": NEW_MODEL})
        s = spec({"id": NEW_MODEL, "catalog": str(write_catalog(tmp_path))})
        assert s.model.id == NEW_MODEL

    def test_the_environment_names_the_catalogue(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """$BEDROCK_BATCH_CATALOG is the catalogue when the spec names none."""
        monkeypatch.setenv(catalog.CATALOG_ENV, str(write_catalog(tmp_path)))
        assert spec({"id": NEW_MODEL}).model.id == NEW_MODEL

    def test_regions_can_be_extended(self, tmp_path: Path) -> None:
        """A source region Bedrock adds to a geography goes in [regions]."""
        catalog.activate(
            write_catalog(
                tmp_path, '[regions]\nau = ["ap-southeast-2", "ap-southeast-4", "ap-southeast-6"]\n'
            )
        )
        assert "ap-southeast-6" in catalog.known_regions()
        assert catalog.region_geography("ap-southeast-6") == "au"

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("[model]\n", r"unknown table \[model\]"),
            (f'[models."{NEW_MODEL}"]\nname = "x"\n', "a new model needs `geographies`"),
            (f'[models."{SONNET_4}"]\ngeographies = ["mars"]\n', "'mars' is not a geography"),
            (f'[models."{SONNET_4}"]\ncolour = 1\n', "colour is not a catalogue key"),
            (f'[models."{SONNET_4}"]\nmax_output_tokens = "big"\n', "max_output_tokens has the wrong type"),
            (f'[models."{SONNET_4}"]\nprices = {{ input = 1 }}\n', "prices must be a table of exactly"),
            (f'[models."us.{SONNET_4}"]\nname = "x"\n', "name the base model id"),
            ('[profiles."not-an-arn"]\nmodel = "x"\n', "not an inference profile ARN"),
            (
                f'[profiles."{ARN}"]\nmodel = "{SONNET_45}"\ngeography = "eu"\n',
                "region us-east-1 cannot call",
            ),
            ('[regions]\nglobal = ["us-east-1"]\n', "not a geography name"),
            ("[regions\n", "not valid TOML"),
        ],
    )
    def test_bad_catalogue(self, tmp_path: Path, text: str, message: str) -> None:
        """A wrong catalogue file is a SpecError naming the file and the key."""
        path = write_catalog(tmp_path, text)
        with pytest.raises(SpecError, match=message) as info:
            catalog.load_catalog(path)
        assert str(path) in str(info.value)

    def test_missing_catalogue(self, tmp_path: Path) -> None:
        """A catalogue file that does not exist is a SpecError naming it."""
        with pytest.raises(SpecError, match="catalogue file not found"):
            catalog.activate(tmp_path / "nope.toml")


class TestLongContextBeta:
    def test_on_a_model_without_a_1m_window(self) -> None:
        """The 1M beta on Haiku 4.5 is refused by the spec, naming the flag and the model."""
        with pytest.raises(SpecError, match=r"Claude Haiku 4\.5 does not have"):
            spec({"id": HAIKU_45}, anthropic_beta=["context-1m-2025-08-07"])

    def test_in_extra(self) -> None:
        """The same flag passed through [request] extra is refused too."""
        with pytest.raises(SpecError, match="1M-token context window"):
            spec({"id": HAIKU_45}, extra={"anthropic_beta": ["context-1m-2025-08-07"]})

    def test_on_sonnet(self) -> None:
        """Sonnet 4.5 takes it."""
        assert spec({"id": SONNET_45}, anthropic_beta=["context-1m-2025-08-07"]).request.anthropic_beta


def test_the_example_catalogue_loads() -> None:
    """jobs/catalog-example.toml, the file docs/catalog.md tells people to copy, is a valid catalogue."""
    path = Path(__file__).resolve().parents[2] / "jobs" / "catalog-example.toml"
    loaded = catalog.load_catalog(path)
    assert "anthropic.claude-sonnet-5-20260301-v1:0" in {m.base_id for m in loaded.models}
    assert len(loaded.profiles) == 1
