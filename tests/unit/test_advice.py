"""The advice a job logs at its end about how its routes were throttled (runner/advice.py)."""

from __future__ import annotations

import pytest

from runner.advice import MIN_THROTTLES, quota_advice
from runner.limits import RouteUse

ROUTE = "global@us-east-1"


def use(
    requests: int = 300,
    throttled: int = 100,
    *,
    tpm: int = 0,
    adaptive: bool = True,
    reserved: float = 400.0,
    settled: float = 300.0,
) -> RouteUse:
    """A route that answered 200 requests, ``reserved`` and ``settled`` quota tokens each."""
    return RouteUse(requests, throttled, 200, 200 * reserved, 200 * settled, tpm=tpm, adaptive=adaptive)


class TestQuotaAdvice:
    def test_a_learned_quota_that_throttled_much_asks_for_tpm(self) -> None:
        """With the quota unknown and a third of the requests throttled: give tpm."""
        advice = quota_advice({ROUTE: use(tpm=0)})
        assert list(advice) == [ROUTE]
        assert advice[ROUTE].startswith(f"{ROUTE}: 100 of 300 requests throttled (33%)")
        assert "give it as [limits] tpm" in advice[ROUTE]

    def test_a_given_tpm_that_throttled_much_is_questioned(self) -> None:
        """With tpm given and still throttled: the quota is lower, or shared."""
        advice = quota_advice({ROUTE: use(tpm=400_000)})
        assert "[limits] tpm = 400,000" in advice[ROUTE]
        assert "lower than that, or shared" in advice[ROUTE]

    def test_a_fixed_pool_is_told_to_pace(self) -> None:
        """adaptive = false, no tpm: the fixed pool does not pace at the quota."""
        advice = quota_advice({ROUTE: use(adaptive=False)})
        assert "adaptive = false" in advice[ROUTE]

    def test_max_tokens_far_above_the_answers_is_named(self) -> None:
        """Reservations of 4,396 quota tokens for answers settling to 1,150: lower max_tokens."""
        advice = quota_advice({ROUTE: use(reserved=4_396, settled=1_150)})
        assert "reserved 4,396 quota tokens per request" in advice[ROUTE]
        assert "settled to 1,150" in advice[ROUTE]
        assert "max_tokens nearer the answers" in advice[ROUTE]
        assert "max_tokens" not in quota_advice({ROUTE: use(reserved=400, settled=300)})[ROUTE]

    @pytest.mark.parametrize(
        ("requests", "throttled"),
        [
            (300, 15),  # 5 %: what the runner may cost at most, with margin
            (100, MIN_THROTTLES - 1),  # a fifth throttled, but too few 429s to be a pattern
            (0, 0),  # a route that sent nothing
        ],
    )
    def test_a_route_throttled_little_gets_none(self, requests: int, throttled: int) -> None:
        assert quota_advice({ROUTE: use(requests, throttled)}) == {}

    def test_only_the_routes_throttled_are_named(self) -> None:
        other = "us@us-east-1"
        advice = quota_advice({ROUTE: use(), other: use(throttled=3)})
        assert list(advice) == [ROUTE]
