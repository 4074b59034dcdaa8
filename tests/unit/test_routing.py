"""Routing policy: route planning from the catalogue, fallback order, breakers, removal."""

from __future__ import annotations

import pytest

from runner.errors import SpecError
from runner.routing import Router, plan_routes
from runner.types import Route

SONNET45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"
OPUS41 = "anthropic.claude-opus-4-1-20250805-v1:0"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TestPlanRoutes:
    def test_default_is_global_then_home_geography(self) -> None:
        """Without `endpoints`, a model with global gets global first, then its home geography."""
        routes = plan_routes(SONNET45, region="eu-west-1")
        assert [r.model_id for r in routes] == [f"global.{SONNET45}", f"eu.{SONNET45}"]
        assert all(r.region == "eu-west-1" for r in routes)

    def test_model_without_global_uses_its_geographies(self) -> None:
        """Opus 4.1 has no global profile, so only the us. profile is planned."""
        routes = plan_routes(OPUS41, region="us-east-1")
        assert [r.geography for r in routes] == ["us"]

    def test_residency_never_plans_global(self) -> None:
        """With residency set, the only route is that geography's profile."""
        routes = plan_routes(SONNET45, region="eu-central-1", endpoints=["global", "eu"], residency="eu")
        assert [r.geography for r in routes] == ["eu"]

    def test_missing_geography_names_model_and_geography(self) -> None:
        """A geography the model lacks is a SpecError that names both."""
        with pytest.raises(SpecError, match=r"Claude Opus 4.1 has no 'eu' inference profile"):
            plan_routes(OPUS41, region="eu-west-1", residency="eu")

    def test_profile_id_pins_the_geography(self) -> None:
        """An inference profile id as the model pins its geography."""
        routes = plan_routes(f"us.{SONNET45}", region="us-west-2")
        assert [(r.geography, r.region) for r in routes] == [("us", "us-west-2")]

    def test_foreign_geography_gets_its_own_region(self) -> None:
        """A geography other than the home region's is called from one of its own regions."""
        routes = plan_routes(SONNET45, region="us-east-1", endpoints=["eu"])
        assert routes[0].region.startswith("eu-")

    @pytest.mark.parametrize("region", ["eu-wst-1", "xx-nowhere-9", ""])
    def test_unknown_region_is_refused(self, region: str) -> None:
        """A region the catalogue does not know (a typo, AWS_REGION gone wrong) is a SpecError, even with
        residency, where it used to become the geography's home region without a word."""
        with pytest.raises(SpecError, match=rf"region '{region}' is not a Bedrock region"):
            plan_routes(SONNET45, region=region, residency="eu")


def _routes() -> list[Route]:
    return [Route(f"global.{SONNET45}", "us-east-1", "global"), Route(f"us.{SONNET45}", "us-east-1", "us")]


class TestSourceRegions:
    def test_each_geography_is_called_from_every_region_that_may(self) -> None:
        """Three US regions: global from each, then us from each: six routes, six quotas."""
        regions = ["us-east-1", "us-east-2", "us-west-2"]
        routes = plan_routes(SONNET45, regions=regions)
        assert [r.name for r in routes] == [f"global@{r}" for r in regions] + [f"us@{r}" for r in regions]

    def test_a_geography_no_region_belongs_to_is_called_from_its_home(self) -> None:
        """An eu endpoint asked for by a US-only job is called from eu's home region, once."""
        routes = plan_routes(SONNET45, regions=["us-east-1", "us-west-2"], endpoints=["eu"])
        assert [r.name for r in routes] == ["eu@eu-central-1"]

    def test_residency_keeps_every_region_in_its_geography(self) -> None:
        """With residency, each listed region calls only its geography's profile."""
        routes = plan_routes(SONNET45, regions=["eu-west-1", "eu-central-1"], residency="eu")
        assert [r.name for r in routes] == ["eu@eu-west-1", "eu@eu-central-1"]
        assert all(not r.model_id.startswith("global.") for r in routes)


class TestRouter:
    def test_first_attempt_takes_the_first_route(self) -> None:
        """A fresh row goes to the first route in order."""
        router = Router(_routes())
        assert router.choose() == _routes()[0]

    def test_retry_moves_past_the_failed_route(self) -> None:
        """After a failure on route 1 the next attempt starts at route 2."""
        g, u = _routes()
        router = Router([g, u])
        assert router.choose(after=g) == u
        assert router.choose(after=u) == g

    def test_breaker_opens_after_consecutive_failures_and_recovers(self) -> None:
        """Five failures open the breaker; after the cool-down one probe passes; success closes it."""
        clock = Clock()
        g, u = _routes()
        router = Router([g, u], clock=clock, cooldown_s=5.0)
        for _ in range(5):
            router.failure(g)
        assert router.state(g) == "open"
        assert router.choose() == u
        clock.now = 5.0
        assert router.choose() == g  # the half-open probe
        assert router.choose() == u  # only one probe at a time
        router.success(g)
        assert router.state(g) == "closed"
        assert router.choose() == g

    def test_failed_probe_doubles_the_cooldown(self) -> None:
        """A failing half-open probe re-opens the breaker for twice as long."""
        clock = Clock()
        g, u = _routes()
        router = Router([g, u], clock=clock, cooldown_s=5.0)
        for _ in range(5):
            router.failure(g)
        clock.now = 5.0
        assert router.choose() == g
        router.failure(g)
        clock.now = 14.0
        assert router.choose() == u
        clock.now = 15.0
        assert router.choose() == g

    def test_removed_route_is_never_chosen(self) -> None:
        """A route removed for AccessDenied is skipped for the rest of the job."""
        g, u = _routes()
        router = Router([g, u])
        router.remove(g, "AccessDenied")
        assert [router.choose() for _ in range(3)] == [u, u, u]
        assert router.active == [u]

    def test_all_open_returns_none_with_a_wait(self) -> None:
        """When every breaker is open, choose() says so and retry_in() says how long to wait."""
        clock = Clock()
        (g,) = _routes()[:1]
        router = Router([g], clock=clock, cooldown_s=5.0)
        for _ in range(5):
            router.failure(g)
        assert router.choose() is None
        assert router.retry_in() == pytest.approx(5.0)
