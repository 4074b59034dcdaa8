"""One route's tokens-per-minute quota, as the client can know it: pure maths over a clock.

Bedrock books a request against the quota of its route by *reserving* ``input + cache_write +
max_tokens`` when it arrives and *settling* to ``input + cache_write + output x burndown`` when it
ends. How the quota refills is not documented: a rolling 60 s window and a token bucket refilled
continuously are both plausible, the quota may be drained when a job starts (a crashed run, another
job on the account), another consumer may share it, it may be raised or cut mid-run, and Bedrock
also answers 429 for capacity, whatever the quota. :class:`RouteQuota` assumes none of these:

* **A paced bucket that books like the service.** Admissions draw from a client-side bucket refilled
  at ``rate`` (quota tokens per second) up to a minute of it. Each admission takes its reservation
  *and* what its settlement is expected to add (a running mean); the settlement books only the
  surprise. So the level is what the service will hold once the requests in flight have settled,
  and ``quota_share`` means what it says. A throttle says the service's level is about zero *now*:
  the model's goes to zero less what the requests in flight still owe, so the route waits for that
  debt to be refilled instead of sending into it; a run of 429s in a row backs off further.
* **Evidence dated by admission.** A 429 tells the quota's state when its request was admitted,
  however late a busy client reads it: throttles are counted against the moment (and the startup
  wave) their request went out in, and a throttle of a request admitted before the model last acted
  (emptied, cut) is part of what it acted on, not news.
* **Startup in waves.** The first admissions are released in waves that double every
  :data:`STARTUP_DOUBLING_S` while nothing throttles: a full quota is used within a second or two;
  a drained one costs the first small waves, not a storm (the first wave, refused whole, ends the
  startup at once with ``tpm`` given, and at a later wave's first 429 with it unknown).
* **The rate is measured, not guessed.** Between two throttles the quota was empty at both ends, so
  what it took in between is what it refilled: that sample is the rate to pace at (less what the
  requests in flight still owe at its end, plus what those in flight at its start owed then: the
  service books a settlement when it lands, out of the refill of that moment). A sample spans
  :data:`MIN_SAMPLE_S` or more and :data:`MIN_SAMPLE_REQUESTS` requests, begins a round trip after
  the model last acted (the burst that led to a cut, and the debt it left, are not the quota), and
  cuts to 40 % at most. With the quota unknown, a burst refused in a row sets the rate from what the
  quota took (at most its minute of capacity plus its refill), and discovery doubles the rate every
  two round trips until the first sample or an overshoot, which is measured the same way from the
  moment the model last found the quota empty; with ``tpm`` given the rate starts at ``tpm`` and
  only samples lower it (another consumer, a cut).
* **Probing runs on a clock.** After a sample the rate holds for :data:`PROBE_HOLD_S`, then grows by
  steps that double every :data:`PROBE_EVERY_S` while no throttle answers (10 %, 20 %, 40 %) and
  the rate is what holds the route back, each once the step before has had time to show (two
  requests' worth of excess, 15 s at most): a doubled quota is found in 15 s or so. A paced 429
  at a step's rate that capacity 429s could hardly explain ends it: back to the rate before, and a
  longer hold; a steady quota costs one throttle per probe. While the window guard holds, none for
  a minute after the quota was found drained: a window then holds charges the guard cannot see.
* **Capacity 429s are not the quota.** Throttles with room left in the model empty it only when
  random refusals at the capacity share seen could hardly explain them (:func:`_tail`); an unpaced
  route stops at a lone 429 until the 429s of what it sent before could be read, and restarts in
  waves (:meth:`RouteQuota._look`: the first 429 of a quota just spent is not followed by a round
  trip of requests into it; a capacity 429 costs a pause, 5 % of the time at most); a throttle
  while the quota took all that was sent is no over-sending; cuts (a drain, a refused burst, an
  overshoot, samples) that halved the rate, after which the quota still refused the share it refused
  before, as it would not had it been the quota, are undone and that share taken for capacity 429s
  (:meth:`RouteQuota._judge_cut`, within 30 s or 200 requests of the cut; a drain's cut by whether
  the prior explains the refusals since, for the share its few requests were refused is no
  baseline, and no sample cuts again while it is judged); refusals it explains then neither stop the
  route nor cut its rate, for as long as the route keeps being refused that much (a refused burst's
  cut stands once the guard lifts: at a bucket's measure, a bucket refuses that share again). A
  route an undone cut left unpaced tests its storms against the upper bound of the share judged,
  until it has sent enough to measure that share itself. Paced at a given ``tpm``, a sample cuts only
  if such refusals could hardly explain the requests refused since the earliest throttle of the last
  15 s. With the queue always full, no 429 comes with room left, so random ones look paced and each
  sample between two of them reads the rate less their share: a sample's cut is tried before the
  next one (while the requests since it refuse the share refused before it, no other cuts,
  :data:`HOLD_OFF_S`), and what the route is refused while paced at a sample's rate (a *quiet*
  period: under the quota it measured, only capacity 429s refuse) gives the capacity share
  (:data:`QUIET_KEPT_S`); the first time it does (whether a cut or a probe step ends the period),
  the cuts of the last ten minutes are undone.
* **The window guard.** A bucket lets a job spend its capacity at once *and* refill during the
  same minute; a rolling window does not. Until the route shows otherwise, its own charges of the
  last 60 s stay within ``60 x rate`` (exact for a window, safe for a bucket). When the guard holds
  requests back, those a window would still admit (it holds the reservations of the requests in
  flight, not yet their settlements) go on, up to a small overfill; then, once the route's own
  charges are past the guard's quota (a measure within a request of the window's size), one is
  sent past it now and then (further apart after each refusal: a window refuses them all), and
  once one is admitted (no 429 back in time) the guard is lifted. With ``tpm`` given and answers
  settling below their reservations, where a window holds just what the guard books, the probe
  goes as soon as the guard holds a request, and is judged at its answer (and those of the
  requests in flight when it went) by what a window held when it arrived (:class:`_GuardTest`);
  with ``tpm`` given, the level built behind it goes out in waves once the answer confirms it,
  and with it unknown, not at all:
  the route paces from two requests' worth.
  A 429 while the route's own charges fill the guard is the window's size, not a sample of the
  rate: the guard holds the route to what they were then (down to 97 % of the rate's minute).
  Samples that cut the rate (and the guard's quota) below what a refused burst measured prove no
  bucket by a probe past it: up to that measure, the rate is probed back instead.

Each decision is told to ``notify`` (``quota.rate`` with why, ``quota.startup_ended``,
``quota.emptied``, ``quota.guard_lifted``, ``quota.guard_restored``): the job logs them as events.

All figures are quota tokens; ``now`` is any monotonic clock in seconds (tests drive it).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from runner.window import DEFAULT_HEADROOM, MEASURED_HEADROOM, WINDOW_S, TokenWindow, WindowCharge

STARTUP_DOUBLING_S = 0.25
"""While starting up, the released allowance doubles this often if no throttle comes back. A 429
answers in milliseconds, an admitted request only when its generation ends: a wave that drew no
throttle in this time was admitted."""
STARTUP_FIRST_WAVE = 2
"""Requests in the first wave: what a drained quota costs in throttles. With ``tpm`` given, a first
wave refused whole, which capacity 429s at :data:`CAPACITY_PRIOR` could hardly do (p < 0.001),
ends the startup as drained: the route paces at ``tpm`` from an empty quota. (Two 429s were too
few to end it; a drained bucket's refill admitted the next waves, and the doubling went on until a
wave a second later was refused in part: 12 429s on average with 0.15 s of read lag, 1.2 % of the
issue's 1,200 rows, now 0.2 %.) With ``tpm`` unknown the waves go on, for what they admit on the
refill is what the first rate is measured from, but the first 429 of a later wave ends the
startup: the issue's drained bucket, `tpm` unknown, 1.78 -> 1.17 % of the requests throttled
(the worst of six runs 2.76 -> 1.64 %; at 256 in flight 3.07 -> 1.72 %)."""
STARTUP_MAX_S = 4.0
"""Startup ends after this long at the latest (its allowance is then 65,000 requests)."""
STARTUP_EXIT_THROTTLES = 3
STARTUP_EXIT_SHARE = 0.25
"""At least 3 throttles, and at least this share of the admissions, of the startup waves up to one
say the quota is not full: startup ends. Capacity throttles, a few per cent, do not end it. A
throttle counts against the wave its request went out in, not the wave under way when it is read: a
busy client reads a 429 late, after the next wave went out, and must not dilute it among that
wave's admissions."""
STARTUP_EXIT_SHARE_GIVEN = 0.5
"""The same share with ``tpm`` given, unless the waves before were taken whole (a stock spent, see
:meth:`RouteQuota._stock_spent`). A drained start read so paces at ``tpm`` from an empty quota, and
with capacity 429s at a tenth of the requests the waves' small counts (3 of 12, 4 of 16) read as one
in half the runs: the full quota's stock was never used, and the job ran at 0.55 of its limit on
average in bench_quota_model. A drained quota refuses most of a wave (its first wave whole:
:data:`STARTUP_FIRST_WAVE`); capacity 429s refuse a few of each. With `tpm` unknown a drain's cut is
judged and undone (:meth:`RouteQuota._judge_drained`), and the quarter stays. The waves before are
taken whole at p < :data:`GIVEN_STOCK_P` here: at :data:`STOCK_P`, 5 of 19 refused by capacity 429s
after 31 taken read as a stock spent one run in ten."""
GIVEN_STOCK_P = 0.01
"""The :meth:`RouteQuota._stock_spent` test that keeps :data:`STARTUP_EXIT_SHARE` with ``tpm`` given."""
DRAIN_STOCK_SAMPLE = 0.75
"""A drained start with ``tpm`` given was capacity 429s if, paced at ``tpm`` since, the route is
refused more than the prior explains and the quota took this share of ``tpm`` at least: another
consumer or a lower quota refuses as much, but takes less (see :meth:`RouteQuota._judge_drain_stock`)."""
STOCK_P = 0.1
"""See :meth:`RouteQuota._stock_spent`: a startup whose waves were taken whole, then refused, spent a
stock. (At 0.01, three 429s of a wave of ten after a hundred requests taken whole did not say so:
a window found 30 % full, read as drained and paced at half what its stock let through, stormed.)"""
STARTUP_STOCK = 128
"""Requests sent in the startup waves before the one that ended it, refused no more than the 2 %
prior explains, say the quota held a stock (a full bucket, a window's minute) that the startup spent,
not a trickle of refill: see :meth:`RouteQuota._drained`."""
STARTUP_STOCK_TOKENS = 80_000
"""...or this many quota tokens of them (reservations): with ``max_tokens`` 4,096, a full 300,000
TPM quota holds 67 reservations, and a startup that spent them read as a drained quota at 3,800,000
TPM, whose cut the judge undid within two seconds: a storm of 20-25 % of the job's requests. A
drained quota's refill admits that much in the startup's first second or two only at 3,000,000 TPM
or more."""
MIN_SAMPLE_S = 1.0
"""Shortest span between two throttles that measures the refill (shorter: one request's size is
a large error)..."""
MAX_SAMPLE_S = 15.0
"""...and longest (longer: the quota may have filled up in between, and the sample be too low)..."""
MIN_SAMPLE_REQUESTS = 10
"""...and over at least this many requests: at a few requests a second, a span of 1 s whose one
request a capacity 429 refused read as a quota of 0."""
MAX_EMPTY_SAMPLE_S = 60.0
"""An overshoot is measured from the quota's last empty moment up to this far back: longer, a bucket
that a slow start let fill to its capacity (a minute of refill) wasted refill, and the measure would
be too low. (At 30 s, a quota found partly used overshot 43 s after its stock ran out, the window
guard having held the route 30 s: half of what was sent, a storm, and low samples after it; 5.4 %
of a bucket's requests throttled end to end, 6.1 % of a window's; 1.5 and 2.0 % now.)"""
PACED_SLACK = 2.0
"""A throttle counts as a measure of the rate only when the model had at most this many
reservations' worth of room left: the route was sending as fast as its rate let it."""
UNPACED_THROTTLES = 3
DRAIN_P = 1e-5
CAPACITY_PRIOR = 0.02
"""Throttles with room left in the model empty it only when at least 3 came within a second and
capacity 429s, refusing requests at random at the share seen so far (at least 2 %), would refuse so
many of the admissions among them with a probability under :data:`DRAIN_P`. A quota drained by
someone else refuses requests in a row; capacity 429s are spread among admitted ones (a share
threshold instead, 3 of 8 admissions, fired about once a job on 2 % capacity 429s and spent a full
quota's burst)."""
CAPACITY_HORIZON = 200
"""Admissions over which the share of capacity 429s (throttles with room left that did not empty the
model) is averaged."""
ADMITTED_KEPT = 4096
OVER_SENDING = 0.985
"""A sample under this share of what was sent (less the capacity throttles) is over-sending. (At
0.95, a rate measured 4.7 % above a shared quota was never cut: a 429 every 10 s for the rest of the
job, one request in 23.)"""
PACE_MARGIN = 0.97
"""The rate is set a little under a sample, so an empty quota refills a little."""
MAX_CUT = 0.4
"""One sample cuts the rate to 40 % of it at most. A bucket that a slow rate let fill lets a faster
one run on its credit for a while, then refuses everything until the debt of what is in flight is
paid: a sample across that debt reads near zero (one read 0 of a 600,000 TPM quota and cut the rate
to its floor, 9,000). A real cut still shows in the next samples, one a second or so. (Half, the
rule before, took two samples to follow a quota halved under a refused burst's measure, which
counts a bucket's capacity: 350,000 -> 175,000 -> 148,000 TPM of 150,000, and the second cut cost
2-3 429s a job; quota_sim, 60 runs: 2.66 -> 2.48 % throttled, a bucket holding a second of its
refill 0.708 / 6.7 % -> 0.772 / 4.1 %. A third cost tails: the worst of 60 runs with 10 % capacity
429s 0.17 -> 0.08 of the limit.)"""
CAPACITY_SAME = 0.1
"""After a cut, requests sent since (from a round trip after it) that the quota took in the share it
took before (nearer to that than to what a quota would let through after the cut, the two at least
this far apart) say the throttles did not depend on the rate: capacity 429s; the cut is undone (a
small cut of a share near 1 tells nothing)..."""
CAPACITY_MIN_ACCEPTED = 0.4
"""...unless the quota took less than this share before the cut (a quota in debt, not capacity), or
refused more after it than random refusals at the share refused before could (a window the route
had filled refused 90 % after a cut, nearer to the 60 % before than to what a quota would let
through at the new rate: taken for capacity 429s, it was a storm of 690 429s)..."""
CAPACITY_DEPTH = 0.5
"""...or the cuts since the chain's first have not halved the rate at least: a quota shared with
traffic the runner cannot see, cut by a sample that read its credit, went on refusing the same share
at 175,000 TPM as at 263,000 (its other half was 150,000), and undoing that cut was a storm of 19 %
of the requests for a minute. Halved, a quota refuses a share that differs (it takes twice the
share it took, up to all)..."""
CAPACITY_JUDGED = 200
CAPACITY_JUDGED_S = 30.0
"""...and a cut not undone after this many requests, or this long, stands (a window's quota refused
a burst at its first minute's end that the route, held back by the window guard for 50 s, had not
sent 200 requests since a cut; taken for capacity 429s, the burst became a storm of 236 429s)."""
CAPACITY_P = 1e-3
"""...or a quota under which the cut put the route (refusing only the capacity share seen, at least
:data:`CAPACITY_PRIOR`) could refuse as many of the sample's requests with a probability above this.
Once undone, the share the route refuses stays the capacity share only while the route keeps being
refused that much (:meth:`RouteQuota._capacity`): a shared quota taken for capacity is cut again as
soon as it refuses more than that share, and its refusals then stop. (A gate on the 429s seen with
room left in the model, the rule before, never opened on a paced route: 30 % random 429s cut an
unknown quota's rate sample after sample, 60 s for a job of 3 s.)"""
QUIET_KEPT_S = 600.0
QUIET_MIN_REQUESTS = 40
QUIET_Z = 2.0
"""A rate set from a sample is under the quota if the sample measured it: sent at it (from a round
trip after, until the rate changes again), the requests are refused only by capacity 429s, whatever
their share. Such *quiet* periods of the last :data:`QUIET_KEPT_S`, pooled, give the capacity share
once they hold this many requests and refuse more than :data:`CAPACITY_PRIOR` could (p < 0.01):
Wilson's lower bound of their share, at z = 2 (a low estimate: too high, it would explain a quota's
refusals away). It is the estimate the cuts need: with the queue always full, no 429 comes with room
left in the model, so random ones look paced, and each sample between two of them read the rate
less their share and cut it (10 % random 429s ratcheted a full 300,000 TPM bucket down to 0.32 of
the job's limit in quota_sim with `tpm` given, 0.47 unknown; now 0.53 and 0.71). The first time the
periods give it, at a cut, the cuts of those minutes were those 429s: the rate before them comes back
(twice the cut's at most), and the share explains such refusals from then on. (Counting the
throttle that ends a period, as the stopping rule would have it, read 10 % as 10 % rather than 5-8 %,
but after a sample that read a shared bucket's credit it also took the quota's refusals for
capacity: a storm of 5.8 % of a job's requests.) Ten minutes of them: the share is a property of the
service's load, and a slow route needs that long to gather enough (two minutes at 5 % capacity
429s, `tpm` given, 6,000 rows: the rate ratcheted to 0.55 of the limit on average, 0.70 now; the
periods are counted over their last minute at most, what the route's ledgers hold)."""
HOLD_OFF_BASELINE = 20
HOLD_OFF_REQUESTS = 40
HOLD_OFF_S = 45.0
HOLD_OFF_MORE_P = 0.01
HOLD_OFF_FEWER_P = 0.05
"""A sample's cut is tried before another: while the requests sent since it (from a round trip
after, up to :data:`HOLD_OFF_REQUESTS` of them, for :data:`HOLD_OFF_S` at most) refuse the share
the requests before it refused (counted from the earliest throttle of the last
:data:`MAX_SAMPLE_S`, over :data:`HOLD_OFF_BASELINE` requests at least), neither more
(p < :data:`HOLD_OFF_MORE_P`: the quota fell further) nor fewer (p < :data:`HOLD_OFF_FEWER_P`: the
cut worked, and was not enough), later samples do not cut again. A quota cut once below the sample
refuses none; capacity 429s refuse the same share at any rate, and cutting on each of them, a
sample every 5-10 s, took the rate to a third of the quota before a quiet period could say so."""
DISCOVERY_S = 1.0
"""An unknown quota's rate doubles this often while requests wait for it, until a sample, or once
per round trip (admission to answer) when that is longer: a bucket admits on the reservation and
learns of the rest at settlement, so an overshoot shows only a round trip later (doubling each
second with 2.4 s answers overshot fivefold, and the debt made the next samples read high)."""
PROBE_HOLD_S = 20.0
"""After a sample the rate holds this long (doubling, up to :data:`PROBE_HOLD_MAX_S`, while samples
agree within :data:`STEADY_SAMPLES`: each probe of a steady quota ends in a throttle or two, one
every 35 s or so, 2-3 % of the requests of a route sending 2 a second)..."""
PROBE_HOLD_MAX_S = 60.0
STEADY_SAMPLES = 0.15
SMALL_CUT = 0.9
"""...but a cut to no less than this share of the rate, its sample's refusals within what capacity
429s explain, neither doubles the hold nor puts a probe off (see :meth:`RouteQuota._sample`)."""
REFUSED_HOLD_S = 10.0
"""After a refused burst's measure, the first probe comes this soon: that measure is no sample (a
bucket's counts its capacity, and samples cut it within seconds; a window's is exact, and the guard
holds probes off), and holding it 20 s cost a quota doubled at 20 s 3.6 s of its 51 s bound."""
PROBE_EVERY_S = 5.0
"""...then grows every so often by a step that doubles each time no throttle answered (10 %, 20 %,
40 %: a doubled quota is found in 15 s; by 5 % and 10 %, in 35 s, 0.79 of the bench's bound). A
paced 429 of a request sent at a step's rate ends the step (:meth:`RouteQuota._probe_refused`):
what a larger step costs a steady quota is one 429, as it was for a smaller one..."""
PROBE_FIRST_STEP = 0.1
PROBE_MAX_STEP = 0.4
PROBE_EVIDENCE = 2.0
"""...once it has had time to show: this many requests' worth of excess over a quota just below the
rate before it (10 % at 300,000 TPM of 1,150-token requests: 5 s)..."""
PROBE_MAX_WAIT_S = 15.0
"""...but no longer than this, so that a slow route still finds a raised quota in a minute or two."""
PROBE_REFUSED_P = 0.05
"""A paced 429 at a step's rate ends the step unless capacity 429s, at the share the route has
seen (:data:`CAPACITY_PRIOR` at least), would refuse as many of the requests sent at the step with
at least this probability: only a 429 among the step's first two requests ends it, or a second one
within the step's first 18. (Ending every step on one, a quota doubled at 20 s with 2 % capacity
429s was found at 0.66 of the limit: each random 429 ended a step and doubled the hold; 0.77 now,
0.69 before the steps could end. Without the prior, on a route whose queue is always full, where
no 429 comes with room left and the share seen stays 0, every random 429 ended a step: with 2 %
capacity 429s the probes never won back what the samples between two of them cut, and a job of
2,400 rows, `tpm` unknown, ran at 0.36-0.6 of its limit in quota_sim, 6,000 rows at 0.44 on
average. A steady quota's refused step now costs one 429 more, sometimes.)"""
STEPS = ("probe", "drain_left", "reopened")
"""Why a rate is a step up to be tried (a paced 429 at it goes back), not evidence: a probe's, a
return to the rate before the cuts of a drain's minute once it is over (see :meth:`RouteQuota._grow`),
and one to the rate before the cuts of a quota found closed once it admits again
(:meth:`RouteQuota._reopened`)."""
PROBE_MAX_RISE = 2.0
"""Probes raise the rate to at most this multiple of the last rate the model set from evidence (a
sample, a refused burst): a quota that lets a route run on credit (a bucket a slower rate let fill,
a window whose earlier charges are expiring) shows no throttle while probes climb, and one climb
went to 2.4 times a window's quota before the debt came due. A doubled quota is still found..."""
PROBE_CAP_S = 120.0
"""...until the rate has held the route back that long at the cap with no throttle: then the rate
becomes the evidence probes climb from. Credit is a minute of the quota at most (a bucket's capacity,
a window's expiring charges), and at a rate 1.5 times the quota it lasts two minutes: past that, the
rate is within half of the quota, and a probe that overshoots is refused as any other. (With no
throttle there was no new evidence, and the cap stuck: a route that a storm had taught 51,000 TPM of
a 300,000 TPM bucket ran at 102,000 for five minutes, no 429, a job of 137 s taking 456.)"""
REFILL_FLOOR_S = 30.0
""":meth:`RouteQuota._refill_floor` counts from the last empty quota at least this long after it: an
empty read wrong (capacity 429s, a bucket holding up to a minute of credit) reads at most
``1 + 60 / span`` times the refill, three times at 30 s, seven at 10 s (quota_model: from 10 s to
30 s one cell moved, overnight with 2 % capacity 429s and `tpm` unknown, 0.898 -> 0.912)."""
PROBE_BINDING = 0.9
PROBE_BINDING_ROUND_TRIPS = 2.0
"""A probe raises the rate only when the quota took at least this share of it over the last two
round trips (a second at least each): the rate was what held the route back..."""
PROBE_RETRY_S = 1.0
"""...and if it did not, the probe is tried again this soon: a route the window guard released
binds within a round trip (over the last 5 s, and 5 s apart, a doubled quota's first probe came 5 s
after the guard lifted)."""
STREAK_BACKOFF = 4
"""From this many paced 429s in a row (none of the requests admitted since the first of them
answered), each one pushes the route's next admission ``2 ** (k - 1)`` requests further back (8 at
the fourth, then :data:`STREAK_MAX_BACKOFF`), as TCP backs off its retransmission timer. A quota
cut below the rate refuses every request sent at the rate until a sample can cut it (ten requests
at least), and paced one request apart those were ten 429s in a row: a 300,000 TPM quota halved
mid-run, `tpm` unknown, cost 4.4 % of the job's requests in 429s in quota_sim, 3.5 % with the
back-off. Not while a cut is being judged, but for a streak capacity 429s could not make (see
:data:`STREAK_JUDGED_WAIT_S`): the requests it sends are what tell capacity 429s from the quota,
and 30 % capacity 429s refuse four in a row often enough that a route backing off starved the
judge; its cut stood, and a job of 41 s took 1,646."""
STREAK_JUDGED_WAIT_S = 2.0
"""A cut being judged is no ban on backing off a streak of 429s that capacity 429s at the share a
judge could undo (60 %) would hardly make: a fixed window found used up, `tpm` unknown, was judged
for 30 s after its drained start, and sent a request every 0.4 s into it, 17 % of a job's requests
refused. Its waits are capped at this, for the judge needs requests and a minute's opening is
missed for as long as the route waits (at 8 s, 0.900 -> 0.872 of a fixed window's limit)."""
STREAK_MAX_BACKOFF = 16.0
STREAK_LONG = 8
STREAK_WAIT_S = 0.5
STREAK_MAX_WAIT_S = 8.0
"""Past this many, the next admission waits this long at least, doubling with each further 429 up
to the maximum: at a high rate 16 requests are a fraction of a second, and a quota that stays closed
(a fixed window until its minute ends, another job holding all of it) cost a 429 or two a second."""
GUARD_PROBE_S = 2.0
"""When the guard first holds requests back, one is sent past it at once; after the first refusal the
next waits this long, then twice as long, then four times longer after each refusal..."""
GUARD_PROBE_MAX_S = 64.0
"""...up to this. A rolling window refuses every probe, each a 429: doubling up to 16 s, a full
window's 600-row job (2 minutes) paid seven of them, 1.4 % of its requests with `tpm` given; now four
(0.7 %; with `tpm` unknown 2.38 -> 1.90 %). A bucket's first or second probe is admitted (a shared
one's, or one halved behind the guard, the second), so a bucket's guard lifts as soon; one that
lifts late lost nothing but credit, as the guard paces at a minute of the rate."""
GUARD_DEBT_SLACK = 1.5
"""A probe past the guard waits until the debt the quota had when last found empty (what the
requests in flight then owed) would be repaid at two thirds of the rate. A refused burst's measure
counts a bucket's capacity as rate, so the model's level came back before the bucket's did: the
first probe, sent while the bucket still paid for the burst's settlements, was refused on nearly
every bucket, and the guard lifted 4 s later on the next (quota_model, `tpm` unknown: 2 % capacity
2.07 -> 1.85 % throttled, a quota doubled at 20 s 0.928 -> 0.953 of its limit)."""
GUARD_ADMITTED_S = 1.0
REFUSALS_KEPT = 32
"""A probe past the guard is taken as admitted when no 429 came back within 3 times the slowest of
the last 32 429s (from admission to being read), and at least this long: a 429 is sent at once, an
answer only when its generation ends, so waiting for the answer cost a round trip of idle route
(2.4 s of a full bucket's 47 s job). A 429 read later after all puts the guard back. (At 0.5 s, on
a route that had seen few 429s, 429s read 150 ms late on average outran it for one probe in 30: a
full window, tpm given, taken for a bucket, and a burst of 75 requests into it.)"""
RELEASE_P = 0.01
"""Credit withheld past a guard lifted on no news (see :meth:`RouteQuota._lift_guard`) is released
in waves, from two requests' worth, doubling each time no 429 came back in time; the rest is
dropped once random 429s could refuse as many of the requests sent since the release began only
with a probability under this (both of the first two)."""
GUARD_OVERFILL = 0.05
"""Requests past the guard that a window would still admit (see :meth:`RouteQuota._past_guard`) may
take the route's expected charges of the last 60 s this far over the guard's quota: what a window
then pays, in one 429 and up to 5 % of a minute's wait, for a bucket being found at once."""
GUARD_CAP_FLOOR = 0.97
"""A 429 while the route's own charges of the last 60 s fill the guard sets the guard's quota to
what they were (a rolling window's size is what it held when it refused), down to this share of
the rate's minute, no lower: a rate measured 1-2 % above a window (an overshoot after a drained
start read 296,660 TPM of 300,000) overfilled it at every minute's end, and each refusal read as a
sample halved the rate; a capacity 429 that came when the charges were 10 % under the window, taken
as its size, let a probe past the guard be admitted, and the guard was lifted on a window."""
GUARD_PROBE_MIN_HOLD_S = 2.0
"""A request is sent past the guard only when the guard would hold it longer than this: admitted
just before the window frees, it would prove nothing (unless it is judged at its answer: see
:class:`_GuardTest`)."""
GUARD_LEAVING_S = 5.0
"""A probe judged at its answer counts the guard's slots that a window may have let go by the time
the probe reached it, up to this long after it was sent; one that took longer to get there tells
nothing."""
EXTRA_WEIGHT = 0.05
"""Weight of one settlement in the running mean of settlement minus reservation (the first ones
make a plain mean, so the first answers teach it at once)."""
MIN_REQUESTS_PER_S = 0.5
"""Floor of the rate, in requests (of the largest size seen) per second."""
SLOT_S = 0.1
LOOK_SHARE = 0.05
"""An unpaced route stops sending at a lone 429 until the 429s of what it sent before could be read
(:meth:`RouteQuota._look`), spending at most this share of its time so."""
LOOK_MIN_S = 0.1
LOOK_MAX_S = 0.5
"""The shortest and the longest look (seconds)..."""
LOOK_WAVE = 2
"""Requests sent after a look, before a second look: a quota just spent refuses some (it refilled
little in the pause), and its storm is read; capacity 429s spare them, and the route goes on..."""
LOOK_RAMP_MAX = 32
"""...in waves that double every :data:`STARTUP_DOUBLING_S` up to this many, not with every slot the
looks freed at once: that burst, into a bucket emptied meanwhile by the settlements of the requests
in flight, was refused 33 times in a row."""
LOOK_CREDIT_S = 1.0
"""...and :data:`LOOK_SHARE`'s credit, at most."""

Phase = Literal["startup", "steady"]
Notify = Callable[[str, dict[str, Any]], None]
"""Told each decision of the model (``quota.rate``, ``quota.drained``, ...) with its figures, for logs."""


def _ignore(event: str, fields: dict[str, Any]) -> None:
    pass


LEDGER_SLOTS = int(WINDOW_S / SLOT_S)


class _Ledger:
    """Quota tokens the service took, summed per 0.1 s slot over the last minute (a ring).

    It books what the model's level is debited: a request's *expected* charge when admitted
    (reservation and expected settlement) and the surprise when it settles. Booking settlements when
    they land, as the service does, made a sample after a burst count the burst's settlements, which
    drive a bucket below zero, as refill: ~30,000 tokens landing in the first second of a drained
    quota read as three times its rate. A throttle or a cancel takes the charge back *at the time it
    was booked*: a 429 read late must not make the span it is read in look as if the quota took less.
    One entry per request would hold ~90,000 a minute.
    """

    __slots__ = ("_slots", "_stamps", "total")

    def __init__(self) -> None:
        self._slots = [0.0] * LEDGER_SLOTS
        self._stamps = [-1] * LEDGER_SLOTS
        self.total = 0.0
        """Everything booked so far, whenever dated (refunds and surprises included)."""

    def add(self, tokens: float, at: float) -> None:
        self.total += tokens
        k = int(at / SLOT_S)
        i = k % LEDGER_SLOTS
        if self._stamps[i] != k:
            if self._stamps[i] > k:
                return  # older than the ring holds
            self._stamps[i], self._slots[i] = k, 0.0
        self._slots[i] += tokens

    def since(self, start: float, now: float) -> float:
        """Tokens booked from ``start`` to ``now`` (by whole slots: the slot holding ``start`` counts)."""
        total = 0.0
        for k in range(int(start / SLOT_S), int(now / SLOT_S) + 1):
            i = k % LEDGER_SLOTS
            if self._stamps[i] == k:
                total += self._slots[i]
        return total


def _tail(n: int, k: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): how likely random refusals at share ``p`` refuse ``k`` of ``n``.

    Summed from ``k`` up when ``k`` is above the mean, else one less the sum from ``k - 1`` down: the
    terms shrink away from the mean either way, so the sum stops early. The first term is computed in
    logs (``comb(6000, 600)`` is past a float's range: a route sending 50 requests a second has 6,000
    in two minutes)."""
    if k <= 0 or p >= 1.0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if k > n * p:
        return min(_pmf_run(n, k, p, up=True), 1.0)
    return max(0.0, 1.0 - _pmf_run(n, k - 1, p, up=False))


def _head(n: int, k: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p): how likely random refusals at share ``p`` refuse no more than
    ``k`` of ``n`` (a cut that worked refuses fewer than the share before it)."""
    return 1.0 - _tail(n, k + 1, p)


def _pmf_run(n: int, j: int, p: float, *, up: bool) -> float:
    """P(X >= j) (``up``) or P(X <= j) for X ~ Binomial(n, p), ``j`` on the side of the mean summed
    away from it."""
    log_term = (
        math.lgamma(n + 1)
        - math.lgamma(j + 1)
        - math.lgamma(n - j + 1)
        + j * math.log(p)
        + (n - j) * math.log1p(-p)
    )
    term = math.exp(log_term)
    odds = p / (1.0 - p)
    total = 0.0
    i = j
    while term > 0.0:
        total += term
        if term < total * 1e-12 or not 0 < i < n:
            break
        if up:
            term *= (n - i) / (i + 1) * odds
            i += 1
        else:
            term *= i / (n - i + 1) / odds
            i -= 1
    return total


def _wilson(n: float, k: float, side: float) -> float:
    """Wilson's lower (``side`` -1) or upper (+1) bound, at z = :data:`QUIET_Z`, of a share: ``k``
    of ``n``."""
    z2 = QUIET_Z * QUIET_Z
    p = k / n
    spread = QUIET_Z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    return min(1.0, max(0.0, (p + z2 / (2.0 * n) + side * spread) / (1.0 + z2 / n)))


def _wilson_low(n: float, k: float) -> float:
    return _wilson(n, k, -1.0)


def _wilson_high(n: float, k: float) -> float:
    return _wilson(n, k, 1.0)


def _share_floor(n: int, k: int) -> float:
    """A low estimate of the share capacity 429s refuse, from ``k`` of ``n`` requests refused while
    under the quota: Wilson's lower bound, or 0 for too few requests or a share
    :data:`CAPACITY_PRIOR` could explain."""
    if n < QUIET_MIN_REQUESTS or _tail(n, k, CAPACITY_PRIOR) >= 0.01:
        return 0.0
    return _wilson_low(n, k)


class _Cut(NamedTuple):
    """A cut kept for :meth:`RouteQuota._judge_cut` (a chain of cuts: see ``_note_cut``)."""

    before: float
    """The rate before the chain's first cut (inf: the route was unpaced)."""
    accepted: float
    """The share of requests the quota took before it."""
    at: float
    """When the chain's latest cut was made."""
    sent: float = math.inf
    """The requests that share was counted over when they were too few to take it as exact (a
    drained startup's); inf otherwise."""


class QuotaFigures(NamedTuple):
    """A snapshot of one route's quota model, for progress and logs."""

    rate_tpm: float | None
    """The rate admissions are paced at, in tokens per minute (``None``: not yet limited)."""
    settled_last_minute: float
    """Quota tokens the route's requests settled to over the last 60 s."""
    quota_share: float | None
    """``settled_last_minute`` over the quota the model paces at (``tpm``, or the measured rate)."""
    capacity_share: float
    """Share of requests refused whatever the quota (capacity 429s), as far as it was told apart."""
    guard: bool


@dataclass(eq=False, slots=True)
class Charge:
    """One admitted request's reservation, so the settlement can replace exactly it."""

    reserved: float
    window_charge: WindowCharge
    probe: bool
    wave: int
    """The startup wave the request went out in (-1: after startup)."""
    at: float
    """When it was admitted: a throttle tells the quota's state then, whenever it is read."""
    room: float
    """The model's level just after the admission: a throttle with no room left was paced."""
    owed: float = 0.0
    """What the settlement is expected to add to the reservation, taken from the level already
    (so the settlement books only the surprise)."""
    window_used: float = 0.0
    """The guard's window (the route's own charges of the last 60 s) just before the admission, if
    the guard held then (else 0)."""


@dataclass(eq=False)
class _GuardTest:
    """A probe past the window guard with ``tpm`` given and answers settling below their
    reservations, judged once it and every request in flight when it went have been answered, by
    what a window would have held when the probe reached it.

    The guard's books hold the requests in flight at the route's estimate of their reservations,
    and know of an answer's refund only once it is read. With ``max_tokens`` far above the
    answers, one refund is nearly a whole reservation, and the estimates' error over the requests
    in flight is more than the margin a request past the guard has (a window admitted such a probe
    in one run of six end to end). Both are known once those requests have been answered: each
    answer gives the service's count of its input, and its time at the service says whether it
    may have ended before the probe arrived, which is no later than the probe's answer less its
    own time at the service (a busy client sends late: judged at the probe's admission instead, a
    window lifted its guard in one run of four on a loaded machine)."""

    probe: Charge
    quota: float
    """The guard's quota when the probe was sent (``tpm`` given: the window's size at most)."""
    booked: float
    """The guard's books then, the probe left out."""
    leaving: list[tuple[float, float]]
    """(start, tokens) of the books' slots then that a window may have let go within seconds."""
    pending: dict[Charge, float]
    """The requests in flight then, not answered yet, and what the books held for each."""
    answered: list[tuple[float, float, float, float]] = field(default_factory=list)
    """(earliest end at the service, settled charge, reservation in the service's count, what the
    books held) of those answered since."""
    dropped: float = 0.0
    """What the books held for those refused or lost since (a window held nothing for them)."""
    arrival: float = math.inf
    """The latest the probe can have reached the service, once it is answered."""
    reserved: float = 0.0
    """The probe's reservation in the service's count, once it is answered."""


@dataclass(eq=False)
class RouteQuota:
    """The quota model and pacer of one route (mutable; owned by one event loop)."""

    ceiling: float
    """Rate never exceeded, tokens per second: ``tpm / 60 x headroom`` when ``tpm`` is given."""
    known: bool
    headroom: float = 1.0
    rate: float = math.inf
    """Pacing rate, quota tokens per second (``inf``: unpaced, no quota seen yet)."""
    burst: float = math.inf
    level: float = math.inf
    """Tokens the model believes the service would admit now (negative while settlements are owed)."""
    phase: Phase = "startup"
    discovering: bool = False
    guard: bool = True
    capacity_share: float = 0.0
    notify: Notify = _ignore
    window: TokenWindow = field(default_factory=lambda: TokenWindow(tpm=math.inf, headroom=1.0))
    """The route's own charges of the last 60 s (reserved, then settled): the window guard."""
    settled: TokenWindow = field(default_factory=lambda: TokenWindow(tpm=math.inf, headroom=1.0))
    _stamp: float = 0.0
    _look_until: float = -math.inf
    """Until when an unpaced route sends nothing, after a lone 429 (:meth:`_look`)..."""
    _look_left: int = 0
    """Requests the current wave of a look may still send (0: no look)..."""
    _look_size: int = 0
    """...and that wave's size: each doubles the last, until :data:`LOOK_RAMP_MAX`."""
    _look_s: float = 0.0
    _look_credit: float = LOOK_CREDIT_S
    _look_at: float = 0.0
    """...and the seconds it may spend so, as of when (:data:`LOOK_SHARE`)."""
    _startup_from: float = 0.0
    _startup_released: float = 0.0
    _waves: dict[int, list[int]] = field(default_factory=dict)
    """Admissions and throttles per startup wave: 0 is the first wave (the requests sent at once),
    then one per doubling."""
    _guard_probe_at: float = -math.inf
    _guard_probe_wait: float = GUARD_PROBE_S
    _probe: Charge | None = None
    """The request sent past the window guard, until it is answered."""
    _test: _GuardTest | None = None
    """The probe past the guard being judged at its answer, if it is one (:class:`_GuardTest`)."""
    _partners: list[Charge] = field(default_factory=list)
    """Requests sent past the guard just before the probe, where one request cannot take the route's
    charges past the guard's quota by a request's margin (:meth:`_past_guard`): the probe proves a
    bucket only if they were admitted too."""
    _unconfirmed: Charge | None = None
    """The probe that lifted the guard because no 429 came back in time, until it is answered."""
    _withheld: float = 0.0
    """Level taken back when the guard lifted on no news, released in waves once it is confirmed."""
    _wave: float = 0.0
    _wave_at: float = math.inf
    """The next wave of :attr:`_withheld` and when it goes (``inf``: not before the confirmation)."""
    _release_from: float = math.inf
    """When the release began: a wave refused says the credit is not there (:data:`RELEASE_P`)."""
    _refusal_s: deque[float] = field(default_factory=lambda: deque(maxlen=REFUSALS_KEPT))
    """How long the last 429s took to be read, from admission."""
    _taken: _Ledger = field(default_factory=_Ledger)
    _landed: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=ADMITTED_KEPT))
    """The last settlements below their reservations: (read at, admitted at, what each gave back,
    negative): see :meth:`_holding`."""
    _sent: _Ledger = field(default_factory=_Ledger)
    """Requests admitted, per slot..."""
    _accepted: _Ledger = field(default_factory=_Ledger)
    """...and of those, the ones the service did not refuse (a throttle takes one back at admission)."""
    _allowed: _Ledger = field(default_factory=_Ledger)
    """What the pacing let the route send (its refill, while below its burst): a sample is set
    against what was allowed over its span, not the rate of the moment (a sample spanning a
    discovery's doubling read half the new rate, and cut it)."""
    _in_flight: set[Charge] = field(default_factory=set)
    _extra: float = 0.0
    """Running mean of what a settlement adds to its reservation (output burndown over max_tokens)."""
    _settled_n: int = 0
    _round_trip: float = 0.0
    """Running mean of the time from admission to settlement."""
    _floor: float = 1.0
    _admitted: deque[float] = field(default_factory=deque)
    """Times of the last admissions (a second's worth at most, for the share of unpaced throttles)."""
    _unpaced: deque[float] = field(default_factory=deque)
    _throttles: deque[tuple[float, float]] = field(default_factory=deque)
    """(admitted at, owed then) of the recent throttles that may start a sample."""
    _capacity_seen: float = 0.0
    """Running share of admissions refused with room left in the model (capacity 429s)."""
    _refusals: float = 0.0
    """Running share of admissions refused, for any reason (over :data:`CAPACITY_HORIZON`)."""
    _cut: _Cut | None = None
    """The last cut (a drain, a refused burst, an overshoot, a sample), until the requests sent
    since say whether the refusals were capacity 429s (:meth:`_judge_cut`)."""
    _unpaced_since: tuple[float, int, int] | None = None
    """(when, requests, refused) of an undone cut that left the route unpaced: the requests judged
    and those sent since give the capacity share its storms are tested against (:meth:`_storm_share`)."""
    _rate_set_at: float = 0.0
    """When the rate was last set (the requests before it were sent at another one)."""
    _drain_stock: tuple[float, float] | None = None
    """(when, the model's level then) of a drained start with ``tpm`` given, while the requests since
    may still say its 429s were capacity 429s (:meth:`_judge_drain_stock`)..."""
    _drain_sample: float = 0.0
    """...and the most the samples since measured the quota took."""
    _release_share: float = 0.0
    """The share of requests random 429s may refuse while :attr:`_withheld` goes out, if more than
    :meth:`_random_share`: the upper bound of the share a drained start's judge saw."""
    _ceiling_from: float = -math.inf
    """When the rate last came back to a given ``tpm`` (from creation on, before any cut): requests
    sent at it since give the capacity share (:meth:`_ceiling_share`)."""
    _quiet_from: float = math.inf
    """Start of the current quiet period (:data:`QUIET_KEPT_S`): a round trip after the rate was set
    from a sample, or went back to it after a probe step (``inf``: the rate is no sample's)."""
    _anchor_quiet: bool = False
    """Whether the last rate set from evidence was a sample's (a probe refused goes back to it)."""
    _quiet: deque[tuple[float, int, int]] = field(default_factory=deque)
    """(end, requests, refused) of the quiet periods of the last :data:`QUIET_KEPT_S`."""
    _cut_from: deque[tuple[float, float]] = field(default_factory=deque)
    """(when, rate before) of the samples' cuts of the last :data:`QUIET_KEPT_S`."""
    _held: tuple[float, int, int] | None = None
    """(when, requests, refused before it) of the last sample's cut, while it holds others off."""
    _last_sample_rate: float | None = None
    """The last rate measured between two throttles (quota tokens per second), for logs and tests."""
    _paced_at: float = -math.inf
    """Admission time of the last throttled request that had no room left in the model."""
    _streak: int = 0
    """Paced throttles in a row, since :attr:`_streak_from` (see :data:`STREAK_BACKOFF`)."""
    _streak_from: float = -math.inf
    """Admission time of the first throttle of the streak: an answer to a later request ends it."""
    _epoch: float = -math.inf
    """When the model last acted on throttles (emptied, cut): older requests' 429s are not news."""
    _grown_at: float = 0.0
    _probe_at: float = 0.0
    _probe_step: float = PROBE_FIRST_STEP
    _hold_s: float = PROBE_HOLD_S
    _anchor: float = math.inf
    """The last rate set from evidence; probes stay within :data:`PROBE_MAX_RISE` of it."""
    _capped_at: float = math.inf
    """Since when probes have been held at :data:`PROBE_MAX_RISE` times :attr:`_anchor` (``inf``:
    not); the cap moves once they have been there, and without a 429, for :data:`PROBE_CAP_S`."""
    _settled_at: float = -math.inf
    """When the route last read an answer..."""
    _throttled_at: float = -math.inf
    """...and a 429 (any): a 429 since discovery's last doubling and no answer is a closed quota; the
    window guard and a refused burst's measure hold probes back only until the route has gone
    :data:`PROBE_CAP_S` without one (see :meth:`_grow`)."""
    _probe_from: tuple[float, float] | None = None
    """(rate before, when) of the probe step in force, until a throttle or evidence ends it."""
    _emptied: tuple[float, float, float] | None = None
    """(when, debt then, what the ledger had booked in all then) of the last time the model found the
    quota empty: an overshoot measures the refill from there (:meth:`_since_empty`), and so does the
    probes' floor (:meth:`_refill_floor`)."""
    _foreign_at: float = -math.inf
    """When the quota was last found drained by traffic the route cannot see (a drained start, a run
    of 429s with room left): for a minute, a window may hold charges that the guard does not."""
    _drain_cut: tuple[float, float] | None = None
    """(when, rate before) of the samples' cuts in the minute after the quota was found drained,
    until that minute is over: a window then held charges that have left it since. The minute is
    that of the drain the cuts were made in, not of one found after them: a window found 70 % free,
    `tpm` given, ran 152 s so, and 156 s with the same 429s waiting for the later one's."""
    _closed: tuple[float, float, bool] | None = None
    """(when, rate before, whether discovery was under way) of the last sample that found the quota
    closed, `tpm` unknown: it took nothing over the sample, until a request admitted after it is
    answered (:meth:`_reopened`)."""
    _last_cut_sample: float | None = None
    """The sample of the last cut: a next one that agrees says the quota is steady."""
    _window_cap: float = math.inf
    """The route's own charges of the last 60 s when the quota refused with the guard holding the
    route near them: the most a rolling window was seen to hold (see :data:`GUARD_CAP_FLOOR`)."""
    _lifted_at: float = -math.inf
    """When the window guard was last lifted."""
    _window_measure: float = 0.0
    """A minute of the rate a refused burst set (0: none did): a window's whole size, exactly. While
    the guard holds, a probe past a smaller guard proves no bucket, and the rate may be probed back
    up to it (see :meth:`_past_guard`)."""

    @classmethod
    def create(
        cls, *, tpm: float, now: float, headroom: float | None = None, notify: Notify = _ignore
    ) -> RouteQuota:
        """A route's model: ``tpm`` > 0 is the user's quota (a ceiling), 0 is unknown. ``headroom``:
        the share of the quota paced at, by default :data:`DEFAULT_HEADROOM` of a given ``tpm`` and
        :data:`MEASURED_HEADROOM` of a measured one."""
        if headroom is None:
            headroom = DEFAULT_HEADROOM if tpm > 0 else MEASURED_HEADROOM
        if tpm > 0:
            rate = tpm / WINDOW_S * headroom
            q = cls(
                ceiling=rate, known=True, headroom=headroom, rate=rate, burst=rate * WINDOW_S, notify=notify
            )
            q.level = q.burst
        else:
            q = cls(ceiling=math.inf, known=False, headroom=headroom, notify=notify)
        q._stamp = q._startup_from = q._grown_at = now
        q._probe_at = now + PROBE_HOLD_S
        return q

    # -- admission ---------------------------------------------------------------------------------

    def delay(self, tokens: float, now: float) -> float:
        """0 when a request reserving ``tokens`` may start now, else the seconds to wait."""
        self._refill(now)
        if (
            self.phase == "startup"
            and self._startup_released
            and (self._startup_released >= self.burst or now - self._startup_from > STARTUP_MAX_S)
        ):
            self.phase = "steady"  # the burst went out without a storm: pacing alone from here
            self.notify("quota.startup_ended", {"drained": False, "released": round(self._startup_released)})
        wait = max(self._look_until - now, 0.0)
        if self.phase == "startup":
            released = (self._startup_released + tokens) / (STARTUP_FIRST_WAVE * tokens)
            if released > 1.0:
                wait = self._startup_from + STARTUP_DOUBLING_S * math.log2(released) - now
        need = min(tokens, self.burst)
        if self.level < need:
            wait = max(wait, (need - self.level) / self.rate)
            self._grow(now)  # the rate holds requests back: time to probe it upward, if due
        probe = self._probe
        answered_at = probe.at + self._refusal_wait() if probe is not None else math.inf
        if self._test is not None:
            answered_at = math.inf  # judged at its answer
        if probe is not None and self.guard and now >= answered_at:
            self._lift_guard(unconfirmed=probe)
        if self.guard and math.isfinite(self.rate):
            self.window.tpm = self.guard_quota
            held = self.window.wait_time(tokens + max(self._extra, 0.0), now)
            if held > 0.0:
                if self._extra < 0.0 and self.level >= need:
                    # Answers settling below their reservations: the guard books them whole while
                    # they run, the level gets the surplus back as they land, so the guard binds
                    # first and the rate never held the route back, never probed. After samples
                    # cut it below a refused burst's measure, the route stayed there for good
                    # (135,000 of a 300,000 TPM window, 0.45 of its limit): _grow probes up to
                    # that measure, and no further while the guard holds.
                    self._grow(now)
                if wait <= 0.0 and self._may_probe(held) and self._past_guard(tokens, now):
                    return 0.0
                retry_at = answered_at if probe is not None else self._guard_probe_at
                wait = max(wait, min(held, max(retry_at - now, 1e-3)))
        return max(wait, 1e-3) if wait > 0.0 else 0.0

    def admit(self, tokens: float, now: float) -> Charge:
        """Book an admission that :meth:`delay` allowed."""
        self._refill(now)
        probe = partner = False
        used = 0.0
        if self.guard and math.isfinite(self.rate):
            used = self.window.used(now)
            self.window.tpm = self.guard_quota
            if self._may_probe(self.window.wait_time(tokens + max(self._extra, 0.0), now)):
                room = self._window_room(now)
                probe = room < tokens  # else a filler a window admits too
                if probe and self._pairs() and room >= -tokens:
                    probe, partner = False, True  # the probe follows it (see _past_guard)
        # Book what the request is expected to cost in the end, not only its reservation: the
        # service charges the rest when the answer ends, and an answer read late (a busy client)
        # must not look like quota still free.
        owed = max(self._extra, 0.0)
        self.level -= tokens + owed
        self._floor = max(self._floor, tokens * MIN_REQUESTS_PER_S)
        self._taken.add(tokens + owed, now)
        self._sent.add(1.0, now)
        self._accepted.add(1.0, now)
        self._admitted.append(now)
        if self._look_left and now >= self._look_until:
            self._look_left -= 1
            if not self._look_left:  # the wave went: the next one, twice as large, after a pause
                first = self._look_size == LOOK_WAVE  # its second pause is paid for
                self._look_size *= 2
                if self._look_size <= LOOK_RAMP_MAX and (first or self._look_paid(STARTUP_DOUBLING_S, now)):
                    self._look_left = self._look_size
                    self._look_until = now + (self._look_s if first else STARTUP_DOUBLING_S)
        self._capacity_seen *= 1.0 - 1.0 / CAPACITY_HORIZON
        self._refusals *= 1.0 - 1.0 / CAPACITY_HORIZON
        if len(self._admitted) > ADMITTED_KEPT:
            self._admitted.popleft()
        wave = -1
        if self.phase == "startup":
            if not self._startup_released:
                # The waves' clock starts with the first request, not with the job: a job reads
                # its input and opens its connections first, and waves due by then went out before
                # the first 429 could come back (9 requests refused per drained route, not 3).
                self._startup_from = now
            first = self._startup_released + tokens <= STARTUP_FIRST_WAVE * tokens * (1.0 + 1e-9)
            self._startup_released += tokens
            wave = 0 if first else 1 + int((now - self._startup_from) / STARTUP_DOUBLING_S)
            self._waves.setdefault(wave, [0, 0])[0] += 1
        # The guard's window books the expected cost too: counting reservations only, it saw room
        # for another round trip of requests into a window that their settlements would overfill.
        booked = self.window.reserve(tokens + owed, now)
        charge = Charge(tokens, booked, probe, wave, now, self.level, owed, used)
        self._in_flight.add(charge)
        if partner:
            self._partners.append(charge)
        if probe:
            self._probe = charge
            if self._tests_guard():
                self._test = self._guard_test(charge, used, now)
        return charge

    def settle(
        self,
        charge: Charge,
        tokens: float,
        now: float,
        booked_at: float | None = None,
        *,
        server_s: float | None = None,
        service_reserved: float | None = None,
    ) -> None:
        """The request ran: book its real charge (cache reads free, output burnt down).

        ``server_s``: its time at the service (the answer's invocation latency);
        ``service_reserved``: its reservation in the service's count (input, cache writes and
        ``max_tokens``), where the route booked its own estimate."""
        self._refill(now)
        self._in_flight.discard(charge)
        self._settled_at = now
        reserved = charge.reserved if service_reserved is None else service_reserved
        test = self._test
        if test is not None and charge in test.pending:
            ended = charge.at + server_s if server_s is not None else charge.at
            test.answered.append((ended, tokens, reserved, test.pending.pop(charge)))
        if charge in self._partners:
            self._partners.remove(charge)  # admitted, as the probe must be
        if charge.at >= self._streak_from:
            self._streak = 0  # admitted after the streak began, and answered: the quota admits again
        if self._closed is not None and charge.at > self._closed[0]:
            self._reopened(now)
        extra = tokens - charge.reserved
        self.level -= extra - charge.owed
        self._settled_n += 1
        weight = max(EXTRA_WEIGHT, 1.0 / self._settled_n)
        self._extra += weight * (extra - self._extra)
        self._round_trip += weight * (now - charge.at - self._round_trip)
        self.window.settle(charge.window_charge, tokens, booked_at)
        self.settled.add(tokens, now)
        self._taken.add(extra - charge.owed, charge.at)  # a request's whole cost, at its admission
        if extra < 0.0:
            self._landed.append((now, charge.at, extra))
        if test is not None and test.probe is charge:
            test.arrival = now - server_s if server_s is not None else now
            test.reserved = reserved
        if test is not None and not math.isinf(test.arrival) and not test.pending:
            self._judge_guard_test(test, now)
        elif charge.probe and test is None and (charge is self._probe or charge is self._unconfirmed):
            self._probe_admitted(charge, now)

    def _reopened(self, now: float) -> None:
        """A quota found closed admits again: the samples that read it closed measured no rate, and
        the one before them comes back as a probe step (a paced 429 at it goes back). Probing up
        from the cut instead, a fixed window whose minute the probes had spent by its 40th second
        (samples of 53,000 and 0 TPM: 296,000 -> 47,000) was paced at a sixth of its quota through
        the next minute: 0.63 of the job's limit."""
        if self._closed is None:
            return
        _, before, discovering = self._closed
        self._closed = None
        if before > self.rate:
            self._probe_from = (self.rate, now)
            self._probe_at = now + PROBE_EVERY_S
            self._set_rate(before, "reopened")
        if discovering:
            self.discovering = True
            self._grown_at = now

    def _probe_admitted(self, charge: Charge, now: float) -> None:
        """The probe past the window guard was admitted: the quota refills continuously, not minute
        by minute."""
        if self.guard:
            self._lift_guard()
        elif self._unconfirmed is charge:
            self._wave_at = self._release_from = now  # confirmed: release the withheld level
        self._probe = self._unconfirmed = None

    def throttled(self, charge: Charge, now: float) -> None:
        """The service refused the request: it booked nothing, and the quota is empty now."""
        self._refill(now)
        self._in_flight.discard(charge)
        self._throttled_at = now  # any 429, even one capacity 429s explain (see _grow)
        self._taken.add(-charge.reserved - charge.owed, charge.at)
        self._accepted.add(-1.0, charge.at)
        self._refusals += 1.0 / CAPACITY_HORIZON
        self._refusal_s.append(now - charge.at)
        self._test_drop(charge, now)
        self.window.settle(charge.window_charge, 0.0)
        ended = self._probe_ended(charge)
        if ended is not None:  # a refused probe tells the shape, not the rate
            self._end_probe(ended)
            growth = 2.0 if self._guard_probe_wait <= GUARD_PROBE_S else 4.0
            self._guard_probe_wait = min(self._guard_probe_wait * growth, GUARD_PROBE_MAX_S)
            self._guard_probe_at = now + self._guard_probe_wait
            return
        if self.phase == "startup" and charge.wave >= 0:
            counts = self._waves[charge.wave]
            counts[1] += 1
            # This wave, or all the waves up to it: a quota drained but refilling admits part of
            # each wave, and a few throttles per wave must add up.
            admitted = throttled = 0
            for wave, (a, t) in self._waves.items():
                if wave <= charge.wave:
                    admitted, throttled = admitted + a, throttled + t
            # The waves before this one took what they were sent, but for what the prior explains:
            # the startup spent a stock (see _drained). Then the wave that finds it spent ends the
            # startup as soon as the prior cannot explain its 429s, not at a quarter of it: a late
            # wave is large, and a quarter of it was ten 429s or more (answers in 0.5 s, 600 rows:
            # 3.6 -> 3.0 % of the requests throttled).
            earlier, earlier_refused = admitted - counts[0], throttled - counts[1]
            spent = (earlier >= STARTUP_STOCK or earlier * charge.reserved >= STARTUP_STOCK_TOKENS) and _tail(
                earlier, earlier_refused, CAPACITY_PRIOR
            ) >= 0.01
            improbable = _tail(counts[0], counts[1], CAPACITY_PRIOR) < CAPACITY_P
            # The first wave refused whole is a drained quota (STARTUP_FIRST_WAVE): with tpm given,
            # the startup ends now; with it unknown, at the next 429 of a later wave.
            first_sent, first_refused = self._waves.get(0, (0, 0))
            drained_first = (
                first_refused == first_sent and _tail(first_sent, first_refused, CAPACITY_PRIOR) < CAPACITY_P
            )
            exit_share = STARTUP_EXIT_SHARE
            if self.known and not self._stock_spent(charge.wave, GIVEN_STOCK_P):
                exit_share = STARTUP_EXIT_SHARE_GIVEN
            if (
                (spent and counts[1] >= STARTUP_EXIT_THROTTLES and improbable)
                or (drained_first and (self.known or charge.wave > 0))
                or any(
                    t >= STARTUP_EXIT_THROTTLES and t >= exit_share * a
                    for a, t in (counts, (admitted, throttled))
                )
            ):
                self._drained(charge.at, now, spent=spent, stock=self._stock_spent(charge.wave))
            return
        # Paced to the end of its allowance, a throttle measures the rate; with room left in the
        # model it says the quota was taken by someone else, or refused for capacity: the level
        # empties (and the next throttle, paced, will measure), the rate stays.
        # Dated by its admission: the quota refused it then, however late the 429 is read. A request
        # admitted before the model last acted on a throttle (emptied, cut) is part of what it acted
        # on: a busy client reads a storm's 429s over a second or more, and cutting once per 429
        # read took an unknown quota's rate to a third of its measure.
        at = charge.at
        full = (
            self.guard
            and math.isfinite(self.rate)
            and charge.window_used >= GUARD_CAP_FLOOR * self._rate_minute
        )
        if full:
            # Refused with the guard's window full of the route's own charges: a rolling window's
            # size, not its refill (what refills it is what the route sent a minute before, low
            # after a slow start), so no sample of the rate. The guard holds the route to it.
            self._window_cap = min(self._window_cap, charge.window_used)
        if (
            self._withheld
            and at >= self._release_from
            and not self._random_since(self._release_from, now, RELEASE_P, self._release_share)
        ):
            self._withheld = 0.0  # the waves are refused: the credit is not there
        if at < self._epoch or self._judge_cut(at, now):
            return
        paced = charge.room <= PACED_SLACK * charge.reserved
        if not math.isfinite(self.rate):
            # An unpaced route: one throttle is no quota (capacity 429s come alone). A run of them
            # is a burst into a quota that filled: what it took over the last ``span`` seconds
            # (up to a minute) is a window's whole quota, or a bucket's capacity plus its refill
            # over the span: pace at a minute of it. Exact for a window; a bucket's samples cut it
            # (by span / 60 at most). Half of what it took per second, the rule before, read a
            # 300,000 TPM window filled in 4 s as 1,200,000; over 60 s + span it read a window
            # filled in 30 s as two thirds of itself, and the window guard, proved wrong when the
            # window slid, was lifted. The next samples say more, or undo it (capacity 429s).
            refused = self._refused(at)
            if refused:
                self._burst_refused(at, now, refused)
            else:
                self._look(now)
            return
        if self._drain_stock is not None and self._judge_drain_stock(at, now):
            return
        if not full:
            self._sample(at, now, paced=paced)
        if paced and self._explained_before(at):
            # No more refused than capacity 429s refuse anyway: the route goes on. With `tpm` given,
            # the request gives its charge back (the quota booked none of it), or the route would
            # send a tenth less than the quota takes with a tenth of its requests refused so.
            if self.known:
                self._give_back(charge)
        elif paced:
            step = self._probe_from
            if step is not None and at >= step[1] and not self._random_since(step[1], now, PROBE_REFUSED_P):
                self._probe_refused(step[0], now)
            # One throttle may be a capacity 429 (the quota still holding what the requests in
            # flight will settle to): stop here. A second within a round trip says the quota is
            # empty: then the requests in flight are debt to wait out. (Waiting it out on every
            # throttle, 6 s of quota at 60 in flight, cost a fifth of a job with 2 % capacity 429s.)
            recent = at - self._paced_at <= self._evidence_s
            self._paced_at = at
            if self._streak == 0:
                self._streak_from = at
            self._streak += 1
            if recent:
                self._empty(now)
                self._back_off(charge)
            else:
                self.level = min(self.level, 0.0)
        elif refused := self._refused(at):
            self._epoch = now  # drained by someone else: the rest of this run of 429s is no news
            self._foreign_at = now
            self.notify("quota.emptied", {"refused": round(refused, 3)})
            self._empty(now)

    def _withhold(self, credit: float, release_at: float, share: float = 0.0) -> None:
        """Hold ``credit`` back from the level, to go out in waves from ``release_at`` (``inf``: once
        confirmed), two requests' worth first, doubling each time no 429 came back in time; dropped
        once the waves are refused more than random 429s (``share`` at least) explain."""
        self._withheld = credit
        self._release_share = share
        self._wave = STARTUP_FIRST_WAVE * self._request_size
        self._wave_at = self._release_from = release_at

    def _judge_drain_stock(self, at: float, now: float) -> bool:
        """Judge a drained start with ``tpm`` given by the requests sent since (from a round trip
        after): paced at ``tpm``, a drained quota refills as fast as the route sends, and refuses no
        more than the prior explains; capacity 429s read as a drain keep refusing their share of a
        full quota. Then (True) the stock the model had is released in waves, as credit withheld
        past the window guard is (:data:`RELEASE_P`: refused, the rest is dropped), and the share
        is capacity. (Never judged, a full bucket read so from 10 % capacity 429s sat at ``tpm``'s
        pace with its minute of stock unused: 0.53 of the job's limit.) Not after a stock found
        spent: a window found partly used refuses more than the prior as its other charges leave
        it, and its stock is gone."""
        assert self._drain_stock is not None
        since, stock = self._drain_stock
        start = since + self._evidence_s
        if at < start:
            return False
        n, refused = self._outcomes(start, at)
        if n < MIN_SAMPLE_REQUESTS:
            return False
        self._drain_sample = max(self._drain_sample, self._last_sample_rate or 0.0)
        if (
            _tail(n, refused, CAPACITY_PRIOR) < CAPACITY_P
            and self._drain_sample >= DRAIN_STOCK_SAMPLE * self.ceiling
        ):
            self._drain_stock = None
            self._foreign_at = -math.inf  # nobody drained it
            self.capacity_share = max(self.capacity_share, _wilson_low(n, refused))
            self._refusals = max(self._refusals, self.capacity_share)
            self._withhold(stock, now, _wilson_high(n, refused))
            self.notify(
                "quota.drain_undone", {"capacity_share": round(self.capacity_share, 3), "stock": round(stock)}
            )
            return True
        if n >= CAPACITY_JUDGED or now - since > CAPACITY_JUDGED_S:
            self._drain_stock = None  # the quota was drained
        return False

    def _look(self, now: float) -> None:
        """A lone 429 on an unpaced route: send nothing until the 429s of the requests already sent
        could be read. A capacity 429 costs that pause; the first 429 of a quota just spent, sent
        into at the full concurrency (a bucket found full, `tpm` unknown), saves the requests that
        would have gone into it until the storm was read: 13 of a job's 19 429s went out in the
        quarter of a second between the first 429 read and the storm's verdict. The pauses take
        :data:`LOOK_SHARE` of the time at most (a credit refilled at that share), for capacity
        429s alone, at 10 % of a fast route's requests, came several a second."""
        read = sum(self._refusal_s) / len(self._refusal_s) if self._refusal_s else 0.0
        look = min(max(2.0 * read, LOOK_MIN_S), LOOK_MAX_S)
        extra = now + look - max(self._look_until, now)  # a 429 within a look extends it...
        if not (self._look_left and self._look_size == LOOK_WAVE):
            extra += look  # ...and a new one has a second pause, after its first wave
        if extra > 0.0 and self._look_paid(extra, now):
            self._look_until = now + look
            self._look_s = look
            self._look_left = self._look_size = LOOK_WAVE

    def _look_paid(self, pause: float, now: float) -> bool:
        """Whether the looks' credit (:data:`LOOK_SHARE`) has ``pause`` seconds left; if so, spent."""
        self._look_credit = min(LOOK_CREDIT_S, self._look_credit + (now - self._look_at) * LOOK_SHARE)
        self._look_at = now
        if pause > self._look_credit:
            return False
        self._look_credit -= pause
        return True

    def _burst_refused(self, at: float, now: float, refused: float) -> None:
        """A burst into a full quota was refused (``refused``: the share): pace at a minute of what
        the quota took over the burst's span (up to a minute), and judge the cut as any other."""
        span = max(min(at - self._startup_from, WINDOW_S), MIN_SAMPLE_S)
        if self._unpaced_since is not None:
            # Unpaced again since an undone cut: what the route was refused until this storm is
            # the capacity share, measured over more requests than the judge had (its share, a
            # few requests', was high as often as low: 22 % for 10 % capacity 429s explained a
            # full bucket's refusals away while probes climbed to twice it).
            measured = self._unpaced_share(self._unpaced_since[0], at)
            if measured is not None:
                self.capacity_share = measured
                self._refusals = max(self._refusals, self.capacity_share)
            self._unpaced_since = None
        # What the quota admitted is what it took less what the requests in flight will add when
        # they settle: it refused with those not yet booked (a window so filled holds more than its
        # quota once they land; pacing at what it took, with them, read a 600,000 TPM window as
        # 632,000 and sent into it as it slid). With the headroom, like a given tpm: the guard's
        # quota is then what the window admitted.
        rate = self._stock_rate(self._holding(at - span, at), now)
        self._set_rate(rate, "refused", refused=round(refused, 3))
        self._window_measure = self._rate_minute
        self._note_cut(math.inf, 1.0 - refused, now)
        self._throttles.append((at, self._due(at)))
        self._hold(now)
        self._probe_at = now + REFUSED_HOLD_S
        self._empty(now)

    def cancelled(self, charge: Charge, now: float) -> None:
        """Admitted but never sent: give the reservation back."""
        self._refill(now)
        self._in_flight.discard(charge)
        self._taken.add(-charge.reserved - charge.owed, charge.at)
        self._sent.add(-1.0, charge.at)
        self._accepted.add(-1.0, charge.at)
        self._give_back(charge)
        self.window.settle(charge.window_charge, 0.0)
        self._test_drop(charge, now)
        if charge.wave >= 0:
            self._startup_released -= charge.reserved
            if self.phase == "startup":
                self._waves[charge.wave][0] -= 1
        ended = self._probe_ended(charge)
        if ended is not None:
            self._end_probe(ended)

    def _give_back(self, charge: Charge) -> None:
        """The service booked none of ``charge``: its cost returns to the level (up to the burst)."""
        if math.isfinite(self.level):
            self.level = min(self.burst, self.level + charge.reserved + charge.owed)

    def failed(self, charge: Charge, now: float) -> None:
        """Sent, no answer (5xx, timeout): the service may have booked the reservation; keep it."""
        self._in_flight.discard(charge)
        self.level += charge.owed
        self._taken.add(-charge.owed, charge.at)
        self._test_drop(charge, now)  # the service may have held it, or not: not, to be sure
        ended = self._probe_ended(charge)
        if ended is not None:
            self._end_probe(ended)

    @property
    def guard_quota(self) -> float:
        """What the route's own charges of the last 60 s may add up to while the guard holds: the
        whole quota (no headroom), or less if a window refused there (:data:`GUARD_CAP_FLOOR`)."""
        whole = self._rate_minute
        return max(min(whole, self._window_cap), GUARD_CAP_FLOOR * whole)

    @property
    def _rate_minute(self) -> float:
        """A minute of the rate, without the headroom: the quota the rate stands for. A request past
        it that is admitted proves that the quota is not a 60 s window of that size."""
        return self.rate * WINDOW_S / self.headroom

    # -- figures -----------------------------------------------------------------------------------

    def figures(self, now: float) -> QuotaFigures:
        settled = self.settled.used(now)
        rate = self.rate if math.isfinite(self.rate) else None
        return QuotaFigures(
            rate_tpm=rate * WINDOW_S if rate is not None else None,
            settled_last_minute=settled,
            quota_share=settled / (rate * WINDOW_S) if rate else None,
            capacity_share=max(self._capacity(), self._capacity_seen),
            guard=self.guard,
        )

    # -- internals ---------------------------------------------------------------------------------

    def _refill(self, now: float) -> None:
        if self._withheld and now >= self._wave_at:
            wave = min(self._withheld, self._wave)
            self.level = min(self.burst, self.level + wave)
            self._withheld -= wave
            self._wave *= 2.0
            self._wave_at = now + self._refusal_wait()
        if now > self._stamp:
            if math.isfinite(self.rate) and self.level < self.burst:
                refill = min(self.burst - self.level, (now - self._stamp) * self.rate)
                self.level += refill
                self._allowed.add(refill, now)
            self._stamp = now

    def _set_rate(self, rate: float, why: str, *, quiet: bool = False, **fields: Any) -> None:
        """Pace at ``rate`` (``inf``: unpaced again, the throttles were capacity 429s) and tell why.
        ``quiet``: the rate is a sample's, under the quota it measured (:data:`QUIET_KEPT_S`)."""
        step = why in STEPS
        self._close_quiet(trigger=not step and why != "discovery")
        before = self.rate
        rate = max(self._floor, min(rate, self.ceiling))
        if why == "probe_refused":
            quiet = self._anchor_quiet
        elif not step:
            self._anchor_quiet = quiet
        self._rate_set_at = self._stamp
        if rate >= self.ceiling > before:
            self._ceiling_from = self._stamp
        self._quiet_from = self._stamp + self._evidence_s if quiet else math.inf
        if not step:
            self._anchor = rate
            self._probe_from = None  # the rate is evidence's again, no probe's
        if not math.isfinite(rate):
            self.rate = self.burst = self.level = math.inf
        else:
            if not math.isfinite(self.rate):
                self.level = 0.0  # from unpaced to paced: the quota has just been found full
            self.rate, self.burst = rate, rate * WINDOW_S
            self.level = min(self.level, self.burst)
        tpm = round(rate * WINDOW_S) if math.isfinite(rate) else None
        was = round(before * WINDOW_S) if math.isfinite(before) else None
        self.notify("quota.rate", {"why": why, "rate_tpm": tpm, "was_tpm": was, **fields})

    def _close_quiet(self, *, trigger: bool) -> None:
        """The rate changes: keep what the quiet period that ends was refused (less the throttle that
        ends it, if one does), and raise the capacity share to what the last ones say."""
        now = self._stamp
        if now > self._quiet_from:
            n, k = self._outcomes(self._quiet_from, now)
            if trigger and k:
                n, k = n - 1, k - 1
            if n:
                self._quiet.append((now, n, k))
        self._quiet_from = math.inf
        while self._quiet and self._quiet[0][0] < now - QUIET_KEPT_S:
            self._quiet.popleft()
        self.capacity_share = max(self.capacity_share, _share_floor(*self._quiet_pool(now)))

    def _held_off(self, at: float) -> bool:
        """Whether the last sample's cut holds a new one off (:data:`HOLD_OFF_REQUESTS`)."""
        if self._held is None:
            return False
        cut_at, n0, k0 = self._held
        start = cut_at + self._evidence_s
        n, k = self._outcomes(start, at) if at > start else (0, 0)
        n, k = max(n - 1, 0), max(k - 1, 0)  # the throttle being read chose this moment
        if n >= HOLD_OFF_REQUESTS or at - cut_at > HOLD_OFF_S:
            self._held = None
            return False
        share = k0 / n0
        return _tail(n, k, share) >= HOLD_OFF_MORE_P and _head(n, k, share) >= HOLD_OFF_FEWER_P

    def _drain_judged(self) -> bool:
        """Whether a drained startup's cut (or one chained to it) is still being judged with the
        route paced at the rate it set: no sample cuts again until the judge has its verdict. A
        drained quota paced at half of what it took is refused no more than the prior explains, and
        samples then cut nothing; capacity 429s read as a drain are refused the same share, and
        each sample between two of them read the rate less that share and cut it, restarting the
        judge's count (at a request a second, before it had the ten requests it needs: the issue's
        second trial, 30 % capacity 429s and no quota, sat at the rate's floor for minutes in 25 of
        400 runs in quota_sim). Once a probe or discovery changed the rate, samples measure it."""
        cut = self._cut
        return cut is not None and math.isfinite(cut.sent) and self._rate_set_at <= cut.at

    def _refused_before(self, at: float) -> tuple[int, int]:
        """(requests, refused) before a sample's cut at ``at``: from the earliest throttle of the last
        :data:`MAX_SAMPLE_S` (before it, the quota may have had credit), a round trip after the rate
        or the model last changed; the throttles that chose the span left out."""
        first = self._throttles[0][0]
        since = max(self._rate_set_at + self._evidence_s, self._epoch + self._evidence_s, first)
        ends = 2 if since == first else 1
        n, k = self._outcomes(since, at)
        return max(n - ends, 0), max(k - ends, 0)

    def _back_off(self, charge: Charge) -> None:
        """A run of paced 429s that random ones could hardly make: push the next admission further
        back (see :data:`STREAK_BACKOFF`)."""
        k = self._streak
        # While a cut is judged, only a streak that capacity 429s at the most a judge would undo
        # could hardly make (a closed quota: a cut judged up to 30 s, a 429 every 0.4 s meanwhile).
        judged = self._cut is not None
        if judged and _tail(k, k, 1.0 - CAPACITY_MIN_ACCEPTED) >= CAPACITY_P:
            return
        if k >= STREAK_BACKOFF and _tail(k, k, self._random_share()) < CAPACITY_P:
            self.level -= charge.reserved * min(2.0 ** (k - 1), STREAK_MAX_BACKOFF)
            if k > STREAK_LONG:
                wait = min(STREAK_WAIT_S * 2.0 ** (k - STREAK_LONG - 1), STREAK_MAX_WAIT_S)
                if judged:
                    wait = min(wait, STREAK_JUDGED_WAIT_S)
                self.level = min(self.level, -self.rate * wait)

    def _empty(self, now: float) -> None:
        """The quota is empty now: the level the service sees is about zero, and what the requests in
        flight will add when they settle is owed on top of it. (Setting the model's level to zero
        instead, as if nothing were owed, sent a round trip's worth of requests into the debt those
        settlements made as they landed: a second storm after each throttle.)"""
        expected = max(self._extra, 0.0)
        owed = 0.0
        for other in self._in_flight:
            if not other.owed and expected:
                other.owed = expected
                self.level -= expected
                self._taken.add(expected, other.at)
            owed += other.owed
        self.level = min(self.level, -owed)
        self._emptied = (now, owed, self._taken.total)

    def _refused(self, at: float) -> float:
        """The share of admissions refused, when the throttles that came with room left in the model
        are too many for capacity 429s, else 0: at least :data:`UNPACED_THROTTLES` of requests
        admitted within a second, which 429s at random (:meth:`_random_share`) would refuse among
        the admissions from the first of them to the last with a probability under
        :data:`DRAIN_P`. A drained quota refuses nearly every request in a row; random 429s are
        spread among admitted ones.

        The run may also begin at a later one of those throttles (the densest run at the end, at
        :data:`DRAIN_P` shared among the starts tried): a random 429 up to a second before a storm
        spread it over the admissions of that second, and each 429 of the storm not yet read as
        one raised the random share its test allows. With 256 requests in flight and 2 % capacity
        429s (the issue's stand-in, `tpm` unknown), 37-109 429s went by before the storm was read,
        3.4 % of the job's requests; now 1.1 %."""
        times = self._unpaced
        times.append(at)
        latest = max(times)
        while times and times[0] < latest - 1.0:
            times.popleft()
        admitted = self._admitted
        while admitted and admitted[0] < latest - 2.0:
            admitted.popleft()
        if len(times) >= UNPACED_THROTTLES:
            starts = sorted(times)
            sent = list(admitted)  # in admission order
            last = bisect.bisect_right(sent, latest)
            share = max(self._random_share(), self._storm_share(latest))
            for i in range(len(starts) - UNPACED_THROTTLES + 1):
                refused = len(starts) - i
                between = max(last - bisect.bisect_left(sent, starts[i]), refused)
                if _tail(between, refused, share) < (DRAIN_P if i == 0 else DRAIN_P / len(starts)):
                    return refused / between
        self._capacity_seen += 1.0 / CAPACITY_HORIZON
        return 0.0

    def _storm_share(self, at: float) -> float:
        """The share of requests capacity 429s may refuse on a route unpaced again by an undone cut
        (0 on any other): the share of the requests sent since the undo, up to a second before
        ``at``, once they are :data:`QUIET_MIN_REQUESTS`; before, the upper bound of the share the
        undo was judged on (:func:`_wilson_high`). The judge's ten or twenty requests, taken as
        exact, were a low estimate as often as not: 30 % capacity 429s judged at 22 % read the
        next cluster of them as a storm into a spent quota, and the route sat at a refused burst's
        measure for minutes."""
        if self._unpaced_since is None:
            return 0.0
        since, n, refused = self._unpaced_since
        measured = self._unpaced_share(since, at)
        return measured if measured is not None else _wilson_high(n, refused)

    def _unpaced_share(self, since: float, at: float) -> float | None:
        """The share of its requests the route was refused since an undone cut left it unpaced (at
        ``since``), up to a second before ``at`` (the storm that may be under way left out), once
        they are :data:`QUIET_MIN_REQUESTS`; else ``None``."""
        n, k = self._outcomes(since, at - 1.0) if at - 1.0 > since else (0, 0)
        return k / n if n >= QUIET_MIN_REQUESTS else None

    def _note_cut(self, before: float, accepted: float, now: float, sent: float = math.inf) -> None:
        """Keep a cut for :meth:`_judge_cut`. A cut while one is still unjudged joins it: the chain
        is undone whole, to the rate before its first cut, by the share refused before it (judged
        against the first cut alone, with 30 % random 429s the next sample cut the rate every
        second and the verdict never came); the requests judged are those after the latest cut (the
        ones between, sent at a rate the chain then cut again, made a shared quota that refused
        less after its last cut look like capacity 429s: undone, a storm)."""
        if self._cut is not None:
            before, accepted, sent = self._cut.before, self._cut.accepted, self._cut.sent
        self._cut = _Cut(before, accepted, now, sent)

    def _judge_cut(self, at: float, now: float) -> bool:
        """Judge the last cut by the requests sent since (from a round trip after it: before, the
        debt of the burst that led to it): had the quota refused them, the cut made the share it
        takes go up by the cut's ratio; capacity 429s refuse the same share at any rate. Undone (and
        True) when the share stayed nearer the second and a quota the route is now under could
        hardly refuse so many (:data:`CAPACITY_P`); kept for good when the refusals are too few for
        capacity 429s, or after :data:`CAPACITY_JUDGED` requests."""
        cut = self._cut
        if cut is None:
            return False
        before, accepted_before, cut_at, _ = cut
        if at - cut_at > CAPACITY_JUDGED_S:
            self._cut = None
            return False
        start = cut_at + self._evidence_s
        n, refused = self._outcomes(start, at) if at >= start else (0, 0)
        if n < MIN_SAMPLE_REQUESTS:
            return False
        if math.isfinite(cut.sent):
            return self._judge_drained(cut, n, refused, now)
        accepted = (n - refused) / n
        rate = self.rate
        if_quota = min(1.0, accepted_before * before / rate) if math.isfinite(before) else 1.0
        baseline = max(self._capacity(), CAPACITY_PRIOR)
        if (
            accepted_before >= CAPACITY_MIN_ACCEPTED
            and rate <= CAPACITY_DEPTH * before
            and if_quota - accepted_before >= CAPACITY_SAME
            and abs(accepted - accepted_before) < abs(accepted - if_quota)
            and _tail(n, refused, 1.0 - if_quota * (1.0 - baseline)) < CAPACITY_P
            and _tail(n, refused, 1.0 - accepted_before) >= CAPACITY_P
        ):
            # Cut, the quota still refused the same share: those were capacity 429s, not it.
            self._undo_cut(before, n, refused, now)
            return True
        if _head(n, refused, 1.0 - accepted_before) < CAPACITY_P or n >= CAPACITY_JUDGED:
            self._cut = None  # the quota: the cut stands
        return False

    def _judge_drained(self, cut: _Cut, n: int, refused: int, now: float) -> bool:
        """:meth:`_judge_cut` for a drained startup's cut (and those chained to it). The share its
        waves were refused is a handful of requests' (three of five refused by 30 % capacity 429s
        read as a drain), not a baseline: paced since at half of what the quota took, a route that
        was drained is refused no more than the prior explains, one refused by capacity 429s the
        same share as before. Undone when the prior cannot explain the refusals since and they are
        no more than before; stands when they fall below the share before at its Wilson lower bound.
        (Judged as other cuts, one seed of the issue's second trial, 3 of its first 4 requests
        refused, was never undone: a quota that took under 40 % before its cut was in debt, not
        capacity, and 5 of the next 11 refused said nothing. The route sat at its floor: 356 s for
        a job of 18.) Nor when the quota took less than :data:`CAPACITY_MIN_ACCEPTED` of them: a
        quota that stays closed (a fixed window until its minute ends, another job holding all of
        it) refuses every request at any rate, and read as capacity 429s at 60 % it unpaced the
        route into thousands of 429s a second."""
        baseline = max(self._capacity(), CAPACITY_PRIOR)
        if (
            _tail(n, refused, baseline) < CAPACITY_P
            and _tail(n, refused, 1.0 - cut.accepted) >= CAPACITY_P
            and n - refused >= CAPACITY_MIN_ACCEPTED * n
        ):
            self._undo_cut(cut.before, n, refused, now)
            return True
        before_low = _wilson_low(cut.sent, (1.0 - cut.accepted) * cut.sent)
        if _head(n, refused, before_low) < CAPACITY_P or n >= CAPACITY_JUDGED:
            self._cut = None  # the quota: the cut stands
        return False

    def _undo_cut(self, before: float, n: int, refused: int, now: float) -> None:
        """The refusals that led to the last cut were capacity 429s (``refused`` of the ``n``
        requests sent since it): the rate before comes back and climbs again as discovery does; an
        unpaced route's storms are tested against what those requests allow (:meth:`_storm_share`)."""
        self._cut = None
        self._unpaced_since = (now, n, refused) if math.isinf(before) else None
        self.capacity_share = max(self.capacity_share, min(1.0 - CAPACITY_MIN_ACCEPTED, refused / n))
        self._refusals = max(self._refusals, self.capacity_share)
        self._set_rate(before, "capacity", capacity_share=round(self.capacity_share, 3))
        if math.isfinite(self.level):
            self.level = max(self.level, 0.0)  # no debt: the quota did not refuse those
        self._hold(now)
        self.discovering = math.isfinite(before)
        self._grown_at = now

    def _random_share(self) -> float:
        """The share of requests 429s at random may refuse, as far as the route can tell: what an
        undone cut proved, the running share of throttles with room left, or the prior."""
        return max(self._capacity(), self._capacity_seen, CAPACITY_PRIOR)

    @property
    def _evidence_s(self) -> float:
        """How long what the route sends takes to answer: a round trip, at least MIN_SAMPLE_S."""
        return max(self._round_trip, MIN_SAMPLE_S)

    def _capacity(self) -> float:
        """The share of requests refused whatever the quota: what an undone cut proved, while the
        route keeps being refused that much, or what a given tpm is refused (:meth:`_ceiling_share`)."""
        return max(min(self.capacity_share, self._refusals), self._ceiling_share())

    def _ceiling_share(self) -> float:
        """The share of requests paced at a given ``tpm`` (over the last minute, to a round trip ago)
        that 429s refused, at Wilson's lower bound (:func:`_share_floor`): 0 while the prior explains
        it. Paced at its quota, the route cannot overdraw it: its 429s are capacity 429s, or another
        consumer's or a lowered quota's, which a share taken over a minute hardly counts before the
        samples cut the rate (the rate below ``tpm``, the share is 0). Not within a minute of a quota
        found drained by others: a window's other charges are leaving it then. (Without it, no
        quiet period ever gave a route at its given tpm a capacity share: every second 429 within a
        round trip emptied the model, and 10 % capacity 429s held a full bucket's job to 0.55 of its
        limit.)"""
        if not (self.known and self.rate >= self.ceiling):
            return 0.0
        at = self._stamp
        start = max(self._ceiling_from, at - WINDOW_S + SLOT_S, self._foreign_at + WINDOW_S)
        end = at - self._evidence_s
        if end <= start:
            return 0.0
        return _share_floor(*self._outcomes(start, end))

    def _outcomes(self, start: float, at: float) -> tuple[int, int]:
        """(requests admitted, of them refused) from ``start`` to ``at``, by admission time (the
        429s read so far)."""
        n = round(self._sent.since(start, at))
        return n, min(n, max(0, n - round(self._accepted.since(start, at))))

    def _explained(self, n: int, refused: int) -> bool:
        """Whether capacity 429s, at the share an undone cut proved, explain ``refused`` of ``n``
        requests: then they say nothing of the quota (no cut, and discovery goes on)."""
        return self._capacity() > 0.0 and self._random(n, refused)

    def _random(self, n: int, refused: int) -> bool:
        """Whether 429s at random (the capacity share seen, at least :data:`CAPACITY_PRIOR`) could
        refuse ``refused`` of ``n`` requests."""
        return _tail(n, refused, max(self._capacity(), CAPACITY_PRIOR)) >= CAPACITY_P

    def _chance(self, start: float, at: float) -> bool:
        """:meth:`_random` for the requests after the throttle at ``start`` up to ``at``: the throttle
        at ``start`` is where the span was chosen to begin, so it is not counted."""
        n, refused = self._outcomes(start, at)
        return self._random(n - 1, refused - 1)

    def _explained_before(self, at: float) -> bool:
        """:meth:`_explained` for the requests admitted over the round trip before ``at``."""
        span = self._evidence_s
        return self._explained(*self._outcomes(at - span, at))

    def _hold(self, now: float) -> None:
        """A sample was taken: no probing upward for a while, and the next probe a small one."""
        self.discovering = False
        self._epoch = now
        self._probe_at = now + self._hold_s
        self._probe_step = PROBE_FIRST_STEP

    def _holding(self, start: float, at: float) -> float:
        """What the requests admitted from ``start`` to ``at`` held of the quota at ``at``: what they
        took, but at their reservations for those that settled below them after ``at``. (The
        ledger books a settlement's refund at its admission: a refused burst's measure read late
        counted the refunds landed since, and read a 300,000 TPM window with ``max_tokens`` 4,096
        as 280,000, and a probe past a guard that short was admitted by the window.) Settlements
        above their reservations are left as booked: counting them at their reservations too moved
        bench_quota_model's cells by noise only."""
        first = int(start / SLOT_S) * SLOT_S
        late = 0.0
        for read, admitted, extra in reversed(self._landed):
            if read <= at:
                break
            if first <= admitted <= at:
                late += extra
        return self._taken.since(start, at) - late

    def _stock_rate(self, taken: float, now: float) -> float:
        """A minute of a stock the quota let the route take (``taken``), as a rate: what it admitted
        is what it took less what the requests in flight will add when they settle (it refused with
        those not yet booked), with the headroom, like a given tpm."""
        return max(taken - self._owed(now), 0.0) / WINDOW_S * self.headroom

    def _stock_spent(self, wave: int, p: float = STOCK_P) -> bool:
        """Whether the startup waves up to ``wave`` spent a stock, however small (a quota found partly
        used): the waves before were taken whole, but for what the prior explains, and then this one,
        or it and the one before (the stock may have run out there, a few of its requests refused),
        were refused more than the upper bound of that share could explain (p < :data:`STOCK_P`).
        Capacity 429s refuse the same share in every wave."""
        for split in (wave, wave - 1):
            n0 = k0 = n1 = k1 = 0
            for w, (a, t) in self._waves.items():
                if w < split:
                    n0, k0 = n0 + a, k0 + t
                elif w <= wave:
                    n1, k1 = n1 + a, k1 + t
            whole = n0 > 0 and n1 > 0 and _tail(n0, k0, CAPACITY_PRIOR) >= 0.01
            if whole and _tail(n1, k1, max(CAPACITY_PRIOR, _wilson_high(n0, k0))) < p:
                return True
        return False

    def _drained(self, at: float, now: float, *, spent: bool, stock: bool) -> None:
        """A startup wave was mostly refused: the quota is not full (drained, or shared), or, when
        the waves before it were taken whole (``spent``), the startup spent all it held.

        A spent stock (a full bucket, a window's minute) is measured as a refused burst's, a minute
        of what the quota took, with no discovery: what it took per second of the startup is no
        refill. (With answers in 0.3-0.6 s, settlements land while the waves still double: a full
        bucket's 300,000 TPM spent in 2.4 s read as 4,300,000, discovery doubled it, and samples of
        0 cut it to a sixteenth, a storm each time: 5-16 % of a job's requests throttled, 56 % in
        one run in five.)"""
        self.phase = "steady"
        self.notify("quota.startup_ended", {"drained": not spent, "released": round(self._startup_released)})
        sent, refused = sum(a for a, _ in self._waves.values()), sum(t for _, t in self._waves.values())
        if spent and not self.known:
            self._burst_refused(at, now, refused / sent)
            return
        if not spent:
            self._foreign_at = now
            if self.known and not stock and math.isfinite(self.level):
                self._drain_stock = (now, max(self.level, 0.0))
        if not self.known:
            # Half the rate at which the quota admitted the startup's requests (what it refused
            # taken back), and discovery from there. (Half of all that was released, refused
            # included, read a drained 300,000 TPM window as 557,000.)
            span = max(now - self._startup_from, STARTUP_DOUBLING_S)
            admitted = self._taken.since(self._startup_from, now)
            rate = admitted / span / 2.0
            if stock:
                # What the waves before this one took was a stock (a quota found partly used),
                # however small, not what the quota refills in the startup's span: a minute of it
                # at most, as a refused burst's measure, and discovery from there. (Half of it per
                # second read a bucket found 30 % full as 1,200,000 TPM: a storm, and 17 % of the
                # job's requests throttled; a window 26 %.)
                rate = min(rate, self._stock_rate(admitted, now))
            self._set_rate(rate, "drained")
            self.discovering = True
            self._grown_at = now
            self._note_cut(math.inf, 1.0 - refused / sent if sent else 0.0, now, sent=max(sent, 1))
        self._throttles.append((at, self._due(at)))
        self._epoch = now
        self._empty(now)

    def _sample(self, at: float, now: float, *, paced: bool) -> None:
        """A throttle of a request admitted at ``at``: measure what the quota took since an earlier
        one (both dated by admission), and act on it."""
        throttles = self._throttles
        while throttles and throttles[0][0] < at - MAX_SAMPLE_S:
            throttles.popleft()
        # The latest throttle at least MIN_SAMPLE_S before this one (read out of order: search all),
        # and a round trip after the model last acted: a span that began earlier measures the
        # sending that led to the cut, or the debt it left (settlements of requests admitted before
        # it keep landing for a round trip, and a bucket below zero refuses what it refills).
        lo = max(at - MAX_SAMPLE_S, self._epoch + self._round_trip)
        # The latest such throttle with MIN_SAMPLE_REQUESTS requests since (a slow route needs a
        # longer span: at 6 requests a second, 1 s spans never sampled a storm into a full window).
        start = None
        owed_then = 0.0
        candidates = sorted(((t, o) for t, o in throttles if lo <= t <= at - MIN_SAMPLE_S), reverse=True)
        for t, owed in candidates:
            start, owed_then = t, owed
            if self._sent.since(t, at) >= MIN_SAMPLE_REQUESTS:
                break
        owed_now = self._owed(at)
        throttles.append((at, self._due(at)))
        if start is None:
            span = self._evidence_s
            grown = self._grown_at > self._epoch  # a throttle before any doubling is no overshoot
            if self.discovering and grown and at >= self._epoch + span and not self._explained_before(at):
                # Discovery overshot. The quota is empty now, and was when the model last found it
                # so: what it took in between is its refill (:meth:`_since_empty`), the rate to
                # pace at (a tenth of the rate at least, in case a slow start let a bucket fill).
                # Without that measure (too short, too long ago), half of what was sent over the
                # last round trip, as in TCP's halving of what it had in flight: it went in before
                # the quota could refuse it (a bucket books the settlement after admitting). (Within
                # a round trip of a drained start, a throttle is the drain itself, no overshoot.)
                sent = self._taken.since(at - span, at) / span
                if sent <= 0.0:
                    # The quota admitted nothing over the round trip: still drained, not overshot.
                    # Hold the rate (the next doubling a full period from now) and stay in
                    # discovery, so the rate climbs once it admits again. (Ending discovery here
                    # left a route that met a storm of 429s at the floor, probed up 5 % at a time.)
                    self._grown_at = now
                    return
                before = self.rate
                n, refused = self._outcomes(at - span, at)
                accepted = (n - refused) / n if n else 1.0
                refill = self._since_empty(at, owed_now)
                if refill is not None:
                    rate = max(refill, self.rate * MAX_CUT / 4.0)
                else:
                    rate = max(min(self.rate, sent) / 2.0, self.rate * MAX_CUT / 2.0)
                self._set_rate(rate, "overshoot")
                self._note_cut(before, accepted, now)
                self._hold(now)
                self._empty(now)
            return
        if not paced:
            return
        requests, refused = self._outcomes(start, at)
        if requests < MIN_SAMPLE_REQUESTS:
            return
        # What the quota took is what it refilled, both ends empty; less what the requests in flight
        # now still owe (admitted, not yet booked by the service), plus what those in flight at the
        # start still owed then (booked since, out of the refill). Without this, a sample while the
        # requests in flight grow read high (360,000 of a 300,000 window), and one while they
        # shrink after a cut read low (117,000).
        sample = max(0.0, self._taken.since(start, at) + owed_then - owed_now) / (at - start)
        self._last_sample_rate = sample
        allowed = self._allowed.since(start, at) / (at - start)
        sent = min(self.rate, allowed) * (1.0 - self._capacity())
        accepted = (requests - refused) / requests
        if self._explained(requests, refused) and self._explained(*self._outcomes(candidates[-1][0], at)):
            # As many refused as capacity 429s refuse anyway, over the sample and over every
            # request since the earliest throttle of the span a sample may take: no sign of the
            # quota. (Over the sample's ten or so requests alone, a share of 13 % that a shared
            # bucket's refusals had been taken for explained every short sample while probes
            # climbed to 1.8 times its quota: 20 % of a job's requests throttled, `tpm` given.)
            return
        if self.rate >= self.ceiling and self._chance(candidates[-1][0], at):
            # Paced at a given tpm, the route cannot overdraw its quota by itself: only another
            # consumer or a lowered quota can, and either refuses a share that 429s at random could
            # not. Judged over every request since the earliest throttle of the span a sample may
            # take (up to MAX_SAMPLE_S), not over the sample's ten or so: a short sample between two
            # capacity 429s, three of its eleven requests refused, read 0.75 of tpm and cut to it.
            return
        if sample < OVER_SENDING * sent:
            if self.known and self._took_nothing(start, at, now):
                # Paced at a given tpm, nothing taken over the sample: the quota is closed (a fixed
                # window until its minute ends, another job holding all of it), not measured. The
                # route cannot have overdrawn it by itself; the streak's backoff spaces the
                # requests. (Cut by samples of nothing, a fixed window closed for 30 s halved the
                # rate four times, to 19,700 TPM of 294,000, until the drain's minute was over.)
                return
            if self._held_off(at) or self._drain_judged():
                return  # the last cut is still being tried
            before = self.rate
            rate = max(sample * PACE_MARGIN, self.rate * MAX_CUT)
            baseline = self._refused_before(at)
            self._cut_from.append((now, before))
            while self._cut_from[0][0] < now - QUIET_KEPT_S:
                self._cut_from.popleft()
            if not self.known and self._took_nothing(start, at, now):
                # Nothing taken: a closed quota (a fixed window's spent minute, another job holding
                # all of it) or a debt, not a rate. The cut stands while it lasts; the rate before
                # the chain of cuts that led here comes back when it admits again (:meth:`_reopened`).
                chain = max(r for t, r in self._cut_from if t >= now - MAX_SAMPLE_S)
                minute = self._taken.since(at - WINDOW_S + SLOT_S, at) / WINDOW_S
                closed = self._closed or (at, 0.0, self.discovering)
                self._closed = (at, max(min(chain, minute), closed[1]), closed[2])
            known = self.capacity_share
            self._close_quiet(trigger=True)
            if not known and self.capacity_share:
                # The first capacity share the quiet periods give: the cuts of the last minutes
                # were capacity 429s read as the quota (see QUIET_KEPT_S).
                self._restore_cuts(rate, now)
                return
            if self.known and now - self._foreign_at < WINDOW_S:
                drained_before = before if self._drain_cut is None else max(before, self._drain_cut[1])
                self._drain_cut = (self._foreign_at + WINDOW_S, drained_before)
            self._set_rate(
                rate,
                "measured",
                quiet=rate > self.rate * MAX_CUT,
                sample_tpm=round(sample * WINDOW_S),
            )
            if baseline[0] >= HOLD_OFF_BASELINE:
                self._held = (now, *baseline)
                self._cut = None  # tried by the requests that follow, not by the capacity judge
            else:
                self._held = None
                self._note_cut(before, accepted, now)
            # A small cut whose refusals capacity 429s explain (a sample between two random 429s
            # reads the rate less their share) may be one: it neither doubles the hold nor puts
            # the next probe off. (Each did both: with 2 % capacity 429s, a cut every 20-30 s and
            # no probe between them took a job of 6,000 rows from 300,000 TPM to 160,000, 0.88 of
            # its limit on average, the worst run 0.80.)
            small = rate >= SMALL_CUT * before and self._random(requests, refused)
            probe_at = self._probe_at
            last = self._last_cut_sample
            steady = last is not None and abs(sample - last) <= STEADY_SAMPLES * last
            if not small:
                self._hold_s = min(2.0 * self._hold_s, PROBE_HOLD_MAX_S) if steady else PROBE_HOLD_S
            self._last_cut_sample = sample
            self._hold(now)
            if small and probe_at > now:
                self._probe_at = min(self._probe_at, probe_at)
        elif self.discovering:
            self._hold(now)  # the quota took all that was sent: a capacity 429, or the rate is right

    def _restore_cuts(self, rate: float, now: float) -> None:
        """The quiet periods gave a capacity share for the first time: the samples' cuts of the last
        minutes were capacity 429s read as the quota (see :data:`QUIET_KEPT_S`). The rate before
        them comes back (twice ``rate`` at most)."""
        top = min(max(r for _, r in self._cut_from), 2.0 * rate)
        self._cut_from.clear()
        self._held = self._cut = None
        self._set_rate(top, "capacity", capacity_share=round(self.capacity_share, 3))
        self._hold(now)

    def _quiet_pool(self, now: float) -> tuple[int, int]:
        """(requests, refused) of the quiet periods of the last :data:`QUIET_KEPT_S`, the one under
        way (if any) counted up to ``now``."""
        n = k = 0
        for end, requests, refused in self._quiet:
            if end >= now - QUIET_KEPT_S:
                n, k = n + requests, k + refused
        if now > self._quiet_from:
            n1, k1 = self._outcomes(self._quiet_from, now)
            n, k = n + n1, k + k1
        return n, k

    def _owed(self, at: float) -> float:
        """What the requests in flight admitted by ``at`` will add when they settle: the service has
        admitted them on their reservations and books the rest later, out of what it refills then."""
        return sum(c.owed for c in self._in_flight if c.at <= at)

    def _due(self, at: float) -> float:
        """What the requests in flight admitted by ``at`` will change the service's count by when they
        settle: what they owe (:meth:`_owed`), or, settling below their reservations (``max_tokens``
        far above the answers), what they will give back. A sample starting at ``at`` counts it: the
        route sent into what they gave back, which the quota did not refill (at 1,424 tokens
        reserved and 1,150 settled, samples read a 300,000 TPM bucket as 345,000-365,000)."""
        back = min(self._extra, 0.0)
        return sum(c.owed or back for c in self._in_flight if c.at <= at)

    def _since_empty(self, at: float, owed: float) -> float | None:
        """What the quota refilled per second since the model last found it empty, up to ``at``, when
        it was empty again: what it took, plus the debt it had then, less what the requests in
        flight by ``at`` still owe (``owed``). ``None`` over a span too short or too long to tell
        (a bucket that a slow rate let fill for long would read low)."""
        if self._emptied is None:
            return None
        since, debt, _ = self._emptied
        span = at - since
        if (
            not MIN_SAMPLE_S <= span <= MAX_EMPTY_SAMPLE_S
            or self._sent.since(since, at) < MIN_SAMPLE_REQUESTS
        ):
            return None
        return max(0.0, self._taken.since(since, at) + debt - owed) / span

    def _refill_floor(self, now: float) -> float:
        """The least a quota that refills continuously (the guard lifted) can refill per second: it
        was empty when last found so, and it has admitted all it took since, which it can only have
        refilled (capped at its capacity, a bucket refills less). So probes may climb to twice it,
        whatever the last sample said before. (A bucket holding 20 s of its refill, a refused
        burst's minute read it as 38 % of itself, and probes held at twice that for two minutes:
        0.69 of the job's limit.) Not for a window, which may admit a minute's worth at once as
        its charges expire; nor less than :data:`REFILL_FLOOR_S` after the empty."""
        if self.guard or self._unconfirmed is not None or self._emptied is None:
            return 0.0
        since, debt, booked = self._emptied
        if now - since < REFILL_FLOOR_S:
            return 0.0
        return max(0.0, self._taken.total - booked + debt - self._owed(now)) / (now - since)

    def _grow(self, now: float) -> None:
        """The rate holds requests back: discovery doubles it each second; later, probe on a clock."""
        if not math.isfinite(self.rate) or self.rate >= self.ceiling:
            return
        if self.discovering:
            # Before the first answer, every 2 s: the round trip is unknown, and so is what a
            # request costs once settled (a doubling a second after a drained start overshot 3x);
            # a quota refusing everything still gets probed (a storm of 40 429s at the floor's
            # one request per 2 s took 80 s).
            every = max(DISCOVERY_S, 2.0 * self._round_trip) if self._settled_n else 2.0 * DISCOVERY_S
            if now >= self._grown_at + every:
                if self._throttled_at >= self._grown_at > self._settled_at:
                    # Refused since the last doubling, and no answer: a closed quota (a fixed
                    # window until its minute ends, another job holding all of it), no room to
                    # grow into. Doubling on through a closed minute, the rate was eight times the
                    # quota when it opened: 42 % of the requests throttled.
                    self._grown_at = now
                    return
                self._set_rate(self.rate * 2.0, "discovery")
                self._grown_at = now
        elif self._drain_cut is not None and now >= self._drain_cut[0]:
            # The minute after a drain is over: what other traffic held in a window has left it,
            # and the samples that read its leaving as the quota are retried at once, as one probe
            # step (a 429 at it goes back). Probing up from them by steps, a window found 30 % full,
            # `tpm` given, ran at two thirds of its quota for 50 s after the minute.
            before = self._drain_cut[1]
            self._drain_cut = None
            if before > self.rate:
                self._probe_from = (self.rate, now)
                self._probe_at = now + PROBE_EVERY_S
                self._set_rate(before, "drain_left")
        elif now >= self._probe_at:
            self._probe_at = now + PROBE_EVERY_S
            measured = GUARD_CAP_FLOOR * self._window_measure  # a window's size, as a refused burst read it
            unthrottled = now - self._throttled_at >= PROBE_CAP_S
            if self.guard and (
                (
                    self.window.used(now) >= PROBE_BINDING * self.guard_quota
                    and self.guard_quota >= measured
                    and not unthrottled
                )
                or now - self._foreign_at < WINDOW_S
            ):
                # The window guard holds the route: probing the rate would raise the guard's own
                # quota and send into a window that may be full (a probe from 290,000 to 400,000
                # TPM on a 300,000 window made a 40 s storm). The guard probes the window itself.
                # Nor for a minute after the quota was found drained: a window then holds charges
                # the guard does not see (probes in a drained window's first minute raised the
                # guard to 350,000 of 300,000 TPM; as the minute ended, a storm and a halving).
                # Below what a refused burst measured, though, samples cut the rate (a window's
                # own charges expiring, or capacity 429s): it may climb back, up to that measure.
                # Not once no 429 has come for PROBE_CAP_S, though: the guard books the rate's own
                # minute, so a route paced at its rate fills it, its holds are too short for a
                # probe past it, and it held the rate's probes back for good (a closed fixed window
                # read as 18,000 TPM of 300,000 stayed there for minutes after it opened). A
                # window of the guard's size refuses the step, and the route goes back.
                return
            if not self.capacity_share and self._cut_from and _share_floor(*self._quiet_pool(now)):
                # The quiet periods give a capacity share at a probe's turn, not at a cut's: the
                # cuts were capacity 429s all the same. (Only at a cut, the rule before, a period
                # closed by a probe gave the share and the cuts were never undone: the route climbed
                # from its floor by probe steps, capped at twice a rate the next sample halved.)
                self._close_quiet(trigger=False)
                self._restore_cuts(self.rate, now)
                return
            # Since the guard lifted, if later: before, the guard held the route back, not the rate.
            span = max(min(PROBE_BINDING_ROUND_TRIPS * self._evidence_s, now - self._lifted_at), MIN_SAMPLE_S)
            delivered = self._taken.since(now - span, now) / span
            if delivered < PROBE_BINDING * self.rate * (1.0 - self._capacity()):
                # The rate did not hold the route back for the last round trips (answers slow, rows
                # few, max_in_flight): a higher one would prove nothing, and raced past the quota
                # while nothing throttled (to 2.5 times it, then a storm when the debt came due).
                self._probe_at = now + PROBE_RETRY_S
                self._probe_step = PROBE_FIRST_STEP
                return
            floor = self._refill_floor(now)
            if floor > self._anchor:
                self._anchor = floor
            top = PROBE_MAX_RISE * self._anchor
            if self.rate < top:
                self._capped_at = math.inf
            elif math.isinf(self._capped_at):
                self._capped_at = now
            elif now - self._capped_at >= PROBE_CAP_S and unthrottled:
                # Long at the cap, the rate holding the route back, and no throttle: the rate is the
                # quota's, or what credit is left is small beside it (see PROBE_CAP_S).
                self._anchor = self.rate
                self._capped_at = math.inf
                top = PROBE_MAX_RISE * self._anchor
            rate = min(self.rate * (1.0 + self._probe_step), top)
            if self.guard and self._window_measure and not unthrottled:
                # A refused burst's measure is a window's size: probes stay under it while the
                # guard stands. Not once no 429 has come for PROBE_CAP_S: paced at the measure,
                # the guard's holds are too short for a probe past it, and a measure read wrong
                # (37,700 TPM of a 300,000 TPM bucket, after random 429s taken for capacity) held
                # the route there to the end of a 740 s job; a window of that size refuses the
                # step, and the route goes back.
                rate = min(rate, self._window_measure / WINDOW_S * self.headroom)
            if rate <= self.rate:
                return
            # The next step once this one has had time to show: PROBE_EVIDENCE requests' worth of
            # excess, if the quota is below it. (On a clock alone, a shared quota's probes climbed
            # 5 %, 10 %, 10 % before the first 429 of the first came back: 25 % over, a storm.)
            sent = self._sent.since(now - span, now)
            cost = delivered * span / sent if sent >= 1.0 else 0.0
            seen = PROBE_EVIDENCE * cost / (rate - self.rate)
            self._probe_at = now + min(max(PROBE_EVERY_S, seen), PROBE_MAX_WAIT_S)
            self._probe_from = (self.rate, now)
            self._set_rate(rate, "probe")
            self._probe_step = min(self._probe_step * 2.0, PROBE_MAX_STEP)

    def _random_since(self, start: float, now: float, p: float, share: float = 0.0) -> bool:
        """Whether 429s at random (:meth:`_random_share`, or ``share`` if more: the prior at least)
        would refuse as many of the requests sent since ``start`` (read so far) with a probability
        of ``p`` or more: a probe step's (:data:`PROBE_REFUSED_P`), the withheld level's waves
        (:data:`RELEASE_P`)."""
        return _tail(*self._outcomes(start, now), max(self._random_share(), share)) >= p

    def _probe_refused(self, before: float, now: float) -> None:
        """A request sent at a probe step's rate was refused, paced: the quota is below the step.
        Back to the rate ``before`` it (or the last one set from evidence, if lower: a step that
        went unanswered on a bucket's credit proves nothing), and the hold doubles, up to
        :data:`PROBE_HOLD_MAX_S`, as it does when samples agree: the quota is steady here.
        (Stepping on until a sample cut the rate, a probe cost three to five 429s: one to end the
        step, then the ten requests a sample needs, sent over the quota.)"""
        self._set_rate(min(before, self._anchor), "probe_refused")
        self._hold_s = min(2.0 * self._hold_s, PROBE_HOLD_MAX_S)
        self._probe_at = now + self._hold_s
        self._probe_step = PROBE_FIRST_STEP

    def _window_room(self, now: float) -> float:
        """What a rolling window of the guard's quota would still admit: it holds the reservations of
        the requests in flight, not yet what they will settle to."""
        return self.guard_quota - (self.window.used(now) - self._owed(now))

    def _past_guard(self, tokens: float, now: float) -> bool:
        """Whether a request the guard holds goes now: a *filler*, which a window would admit too,
        while the guard's overfill stays within :data:`GUARD_OVERFILL`; then, with the window's
        room spent, a *probe*, which only a quota refilled continuously admits. (A probe sent
        while a window still had room for it proved nothing: a window taken for a bucket lost its
        guard and a storm followed; waiting for the route to drain first left it idle for the
        slowest answer in flight, 4 s of a full bucket's 47 s job.) Where fillers cannot take the
        route past the guard's quota, the probe goes with partners (:meth:`_pairs`)."""
        room = self._window_room(now)
        if room >= tokens:
            over = self.window.used(now) + tokens + max(self._extra, 0.0) - self.guard_quota
            return over <= GUARD_OVERFILL * self.guard_quota
        untested = max(self._rate_minute, self._window_measure) - self.guard_quota
        if self._pairs():
            # A window's cap (a 429 with the guard's window full of the route's own charges) is its
            # size: the rate's minute above it is then a bucket's measure (capacity and refill),
            # which no filler reaches when answers settle below their reservations. Counted as
            # room, it held the probe back, and a bucket ran at the cap for its first minute (0.64
            # of its limit, `max_tokens` 1,024). Only a rate that samples cut below a refused
            # burst's measure leaves room untested.
            untested = max(self._window_measure - self._rate_minute, 0.0)
        if room + untested >= tokens:
            # Room in the rate's minute, not in the window that refused; or in the window a refused
            # burst measured, above a rate that samples cut since: no test. (Capacity 429s cut a
            # full window's rate by a sixth; a probe past the guard's smaller quota was admitted,
            # the guard lifted on a window, and the probes that followed climbed to twice it: 2 %
            # capacity 429s, `tpm` unknown, a job of 6,000 rows at 0.73 of its limit.)
            return False
        # A window that refused a request of ``tokens`` at a measure of its size holds less than
        # the measure plus ``tokens``: with up to a request's room left by the measure, it may still
        # admit one. Only past the measure does an admitted probe tell a bucket. (A full window,
        # tpm unknown, measured at 299,400 of its 300,000 TPM, admitted a probe sent with 100
        # tokens of room: its guard lifted, samples of 0 cut the rate to an eighth, and a job of
        # 126 s took 205.)
        due = self._probe is None and now >= self._guard_probe_at and self._repaid(now)
        if self._tests_guard():
            return due  # judged at its answer, by what a window held then
        if self._pairs():
            return due  # a partner while the room is a request's margin or less, then the probe
        return room < 0.0 and due

    def _pairs(self) -> bool:
        """Whether a probe past the guard goes with partners: ``tpm`` unknown and answers settling
        below their reservations (``max_tokens`` above the outputs, the runner's default 1,024
        included). Fillers then never take the route's charges past the guard's quota (each is sent
        with a request's room and settles lower), so a lone probe, sent only past it, never went,
        and a full bucket ran at a window's pace, 0.64-0.74 of its limit in bench_quota_model. The
        requests the guard holds go at once instead, the first ones as *partners*, the last, which
        takes the route's charges a request past the guard's quota, as the probe: a window of the
        guard's size, give or take a request, must refuse one of them; a bucket admits them all,
        and only then does the guard lift. (With ``tpm`` given the probe is judged at its answer
        instead: :meth:`_tests_guard`.)"""
        return not self.known and self._extra < 0.0

    def _probe_ended(self, charge: Charge) -> Charge | None:
        """The probe past the guard that ``charge``, refused or never answered, ends: itself if it
        was the probe; if it was a partner, the probe it went with, which proves nothing then (a
        window may have admitted the probe in its place), or the partner itself if the probe has
        not gone yet; else none."""
        if charge in self._partners:
            self._partners.clear()
            return self._unconfirmed or self._probe or charge
        return charge if charge.probe else None

    def _tests_guard(self) -> bool:
        """Whether a probe past the guard is judged at its answer (:class:`_GuardTest`): with
        ``tpm`` given, the window's size at most, and answers settling below their reservations
        (``max_tokens`` far above the outputs). A window then holds what the guard books, the
        reservations of the requests in flight, so no filler could take the route past the guard's
        quota, the probe's own margin is less than a request, and a bucket was paced as a window
        (a job of 208 s at 300,000 TPM, 4,196 tokens reserved and 1,100 settled, took 299 s). Not
        with ``tpm`` unknown: the guard's quota is then a refused burst's measure, which read a
        300,000 TPM window as 289,000, short by more than two requests."""
        return self.known and self._extra < 0.0

    def _may_probe(self, held: float) -> bool:
        """Whether a request the guard would hold ``held`` seconds may go past it: one admitted just
        before the window frees proves nothing (:data:`GUARD_PROBE_MIN_HOLD_S`), but a probe judged
        at its answer knows. (The reservations in flight filling the guard, each answer frees it:
        its holds stayed under 2 s, and no probe went at all end to end.)"""
        return held > GUARD_PROBE_MIN_HOLD_S or (held > 0.0 and self._tests_guard())

    def _guard_test(self, probe: Charge, used: float, now: float) -> _GuardTest:
        """The probe ``probe`` just admitted, with the guard's books at ``used`` before it."""
        leaving = self.window.leaving(now, GUARD_LEAVING_S)
        pending = {c: c.window_charge.tokens for c in self._in_flight if c is not probe}
        return _GuardTest(probe, self.guard_quota, used, leaving, pending)

    def _test_drop(self, charge: Charge, now: float) -> None:
        """``charge``, in flight when the probe being judged was sent, was refused or lost: a window
        held nothing for it then (to be sure)."""
        test = self._test
        if test is not None and charge in test.pending:
            test.dropped += test.pending.pop(charge)
            if not test.pending and not math.isinf(test.arrival):
                self._judge_guard_test(test, now)

    def _judge_guard_test(self, test: _GuardTest, now: float) -> None:
        """The probe of ``test`` and every request in flight when it went have been answered: the
        guard lifts if a window of the guard's quota would have refused the probe when it arrived.
        Else no news: the next probe waits as after a refused one, without the growth."""
        self._test = None
        arrival = test.arrival
        held = test.booked - test.dropped
        held -= sum(tokens for start, tokens in test.leaving if start + WINDOW_S <= arrival + SLOT_S)
        for ended, settled, reserved, booked in test.answered:
            # Ended before the probe arrived (unless that can be ruled out), a window held its
            # settled charge then; else its reservation, in the service's count.
            held += (settled if ended <= arrival else reserved) - booked
        in_time = arrival <= test.probe.at + GUARD_LEAVING_S
        proved = in_time and held + test.reserved > test.quota + 1.0  # a token over: no rounding
        self.notify("quota.guard_tested", {"proved": proved, "held": round(held), "quota": round(test.quota)})
        if proved:
            self._probe_admitted(test.probe, now)
        else:
            self._probe = None
            self._guard_probe_at = now + GUARD_PROBE_S

    def _repaid(self, now: float) -> bool:
        """Whether the debt the quota had when last found empty would be repaid by ``now`` at
        :data:`GUARD_DEBT_SLACK` of the rate's pace."""
        if self._emptied is None:
            return True
        since, debt, _ = self._emptied
        return now - since >= GUARD_DEBT_SLACK * debt / self.rate

    @property
    def _request_size(self) -> float:
        """What the largest request seen is expected to cost, settled."""
        return self._floor / MIN_REQUESTS_PER_S + max(self._extra, 0.0)

    def _took_nothing(self, start: float, at: float, now: float) -> bool:
        """Whether the quota admitted none of the requests admitted from ``start`` to ``at``. Those
        sent within :meth:`_refusal_wait` of ``now`` with no 429 back yet may still get one: they
        are left out with `tpm` given, and with it unknown in a long streak of 429s. (Counted as
        taken, one such request read a fixed window closed for 30 s as a quota of 4,500 TPM, and
        with `tpm` given that cut the rate to its floor, its streak's backoff off while the cut was
        judged: a 429 every 0.4 s for 15 s; with it unknown, a cut to a third of the quota with no
        return, 0.62 of the job's limit. Left out of every sample with it unknown, random 429s at
        10 % made closures of cuts, whose rates came back: one run 3.5 -> 14.8 % throttled.)"""
        taken = self._taken.since(start, at)
        if taken <= 0.0 or not (self.known or self._streak >= STREAK_LONG):
            return taken <= 0.0
        pending = max(start, now - self._refusal_wait())
        return taken - sum(c.reserved + c.owed for c in self._in_flight if pending < c.at <= at) <= 0.0

    def _refusal_wait(self) -> float:
        """How long after its admission a request with no 429 back was admitted (see
        :data:`GUARD_ADMITTED_S`)."""
        return max(GUARD_ADMITTED_S, 3.0 * max(self._refusal_s, default=0.0))

    def _lift_guard(self, unconfirmed: Charge | None = None) -> None:
        """A probe past the guard was admitted (``unconfirmed``: no 429 back in time, its answer
        still out): the quota refills continuously, not minute by minute.

        With the quota unknown, the rate is then still a refused burst's measure: a minute of what
        the quota took, exact for a window, but for a bucket its capacity plus its refill, and all
        of a shared bucket's capacity though only part of its refill is the route's (316,000 TPM of
        a 150,000 share). The model's level grew at that rate while the guard held the route back;
        sent at once, it was a burst of 20 requests into a bucket holding a third of it. A round trip
        of the rate, the rule before, was still a burst: a quota halved while the guard held the
        route, its rate still the burst's 756,000 TPM of 300,000, took 27 requests at once and
        refused 26 (the issue's stand-in shape, 1,200 rows: 3.7 % of the requests throttled). So
        the level keeps two requests' worth: the rate is tried at its pace from the first request,
        and its first samples come before a storm (1.6 %). The probes' test of what the rate held
        back counts from here (:meth:`_grow`): the guard, not the rate, held the route before."""
        self.guard = False
        self._lifted_at = self._stamp
        self._unconfirmed = unconfirmed
        if self.known and unconfirmed is not None and math.isfinite(self.level):
            # Lifted on no news (no 429 back in time, the answer still out): the level that built
            # up while the guard held the route is credit in a bucket, nothing in a window, and a
            # 429 read late makes a window look like a bucket (a burst of 75 requests into a full
            # one). A round trip of it goes now; the rest in waves once the answer confirms it
            # (:data:`RELEASE_P`), as TCP restarts from a small window after an idle spell.
            withheld = max(0.0, self.level - self.rate * self._evidence_s)
            self.level -= withheld
            self._withhold(withheld, math.inf)
        if not self.known and math.isfinite(self.rate):
            self.level = min(self.level, STARTUP_FIRST_WAVE * self._request_size)
            if self._cut is not None and math.isinf(self._cut.before):
                # The refused burst's cut is still being judged, by whether the quota refuses the
                # share it refused before at the burst's measure: a window would refuse none, so
                # the same share said capacity 429s. Paced at a bucket's measure (its capacity
                # counted in), a bucket refuses about that share too, and a shared bucket taken
                # so for capacity 429s unpaced the route: a storm of 98 429s, then a capacity
                # share of 19 % that explained away the next samples' refusals (27 % of a job's
                # requests throttled). The guard lifting says a bucket: the cut stands.
                self._cut = None
        self.notify("quota.guard_lifted", {"confirmed": unconfirmed is None})

    def _end_probe(self, charge: Charge) -> None:
        """The probe past the guard was refused, or never answered: if it had lifted the guard (no
        429 in time), the guard is back."""
        self._probe = None
        if self._test is not None and self._test.probe is charge:
            self._test = None
        if self._unconfirmed is charge:
            self._unconfirmed = None
            self._withheld = 0.0
            self.guard = True
            self.notify("quota.guard_restored", {})
