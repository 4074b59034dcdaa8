"""What a run's figures say its user could change: advice logged when a job ends.

The quota controller does its best with what it is told, but some settings cost throughput or
throttles that no controller can win back: a quota it must learn from throttles (tiny quotas and
``max_tokens`` far above the answers are where learning costs most: docs/quota.md, *Known
limitations*), a fixed pool that does not pace, a ``max_tokens`` that makes Bedrock reserve several
times what the answers use. The user can only fix those if the run says so, at the end, when the
throttles have been counted, rather than in docs they read before the first job.
"""

from __future__ import annotations

from collections.abc import Mapping

from runner.limits import RouteUse

THROTTLED_SHARE = 0.05
"""A route advised about: more than this share of its requests throttled (the runner aims at 2 %)..."""
MIN_THROTTLES = 20
"""...and at least this many throttles (a few 429s of a short job are no pattern)."""
OVER_RESERVED = 2.0
"""Bedrock reserving this many times what the answers settled to is worth a lower ``max_tokens``:
the quota holds the reservation while a request runs."""


def quota_advice(uses: Mapping[str, RouteUse]) -> dict[str, str]:
    """Per route that was throttled more than the runner aims at, what the user could change."""
    advice: dict[str, str] = {}
    for route, use in uses.items():
        if use.throttled < MIN_THROTTLES or use.throttled <= THROTTLED_SHARE * use.requests:
            continue
        share = use.throttled / use.requests
        head = f"{route}: {use.throttled:,} of {use.requests:,} requests throttled ({share:.0%})"
        if not use.adaptive and not use.tpm:
            text = (
                f"{head} with adaptive = false: the fixed pool sends regardless of the quota. Set "
                "[limits] adaptive = true (the default) to pace at the quota, and tpm if you know it"
            )
        elif not use.tpm:
            text = (
                f"{head} while the runner learned the route's quota from throttles. If you know "
                "its tokens-per-minute quota (Service Quotas, Amazon Bedrock), give it as [limits] "
                "tpm: the route is then paced at it from the start"
            )
        else:
            text = (
                f"{head} with [limits] tpm = {use.tpm:,}: the route's quota is lower than that, "
                "or shared with traffic this job cannot see (another job on the account). Check "
                "it in Service Quotas; the runner paces below tpm when throttles say so"
            )
        if use.answered and use.reserved >= OVER_RESERVED * use.settled:
            text += (
                f". Bedrock reserved {use.reserved / use.answered:,.0f} quota tokens per request "
                f"while it ran (input + max_tokens) for answers that settled to "
                f"{use.settled / use.answered:,.0f}: a max_tokens nearer the answers leaves more of "
                "the quota usable (`bedrock-batch stats` suggests one)"
            )
        advice[route] = text
    return advice
