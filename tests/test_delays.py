"""Tests for broker.delays: tier topic names, tier choice and the deliver/wait/hop decision."""

import itertools
import math
import random

import pytest

from broker.delays import (
    DEFAULT_TIER_DELAYS,
    MAX_DELAY_MS,
    Action,
    Decision,
    DelayTier,
    DelayTiers,
    tier_suffix,
)

SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
NOW = 1_700_000_000_000  # an epoch-ms "now" for decide()


# tier_suffix / DelayTier


@pytest.mark.parametrize(
    ("delay_ms", "suffix"),
    [
        (0, "0"),
        (100, "100ms"),
        (1_000, "1s"),
        (10_000, "10s"),
        (60_000, "1m"),
        (600_000, "10m"),
        (3_600_000, "1h"),
        (21_600_000, "6h"),
        (86_400_000, "1d"),
        (1_500, "1500ms"),
        (90_000, "90s"),
        (172_800_000, "2d"),
    ],
)
def test_tier_suffix_uses_largest_whole_unit(delay_ms, suffix):
    assert tier_suffix(delay_ms) == suffix


def test_default_tier_suffixes_are_distinct():
    suffixes = [tier_suffix(delay) for delay in DEFAULT_TIER_DELAYS]
    assert len(set(suffixes)) == len(suffixes)


def test_tier_suffix_property_matches_function():
    assert DelayTier(600_000).suffix == "10m"


def test_tier_topic_appends_suffix_to_delay_queue_name():
    assert DelayTier(10_000).topic("payments.DQ") == "payments.DQ.10s"


def test_zero_tier_topic_ends_in_zero():
    assert DelayTier(0).topic("payments.DQ") == "payments.DQ.0"


def test_default_tiers_are_at_most_ten_times_apart_and_top_out_at_one_day():
    nonzero = [delay for delay in DEFAULT_TIER_DELAYS if delay]
    assert all(upper <= 10 * lower for lower, upper in itertools.pairwise(nonzero))
    assert max(DEFAULT_TIER_DELAYS) == DAY


# DelayTiers construction


def test_tiers_without_zero_raise_value_error():
    with pytest.raises(ValueError):
        DelayTiers((100, 1_000))


def test_empty_tiers_raise_value_error():
    with pytest.raises(ValueError):
        DelayTiers(())


def test_duplicate_tiers_raise_value_error():
    with pytest.raises(ValueError):
        DelayTiers((0, 100, 100))


def test_negative_tier_raises_value_error():
    with pytest.raises(ValueError):
        DelayTiers((-100, 0, 100))


def test_tiers_are_sorted_whatever_the_input_order():
    tiers = DelayTiers((1_000, 0, 100))
    assert [tier.delay_ms for tier in tiers.tiers] == [0, 100, 1_000]


def test_default_tiers_are_the_default_delays():
    assert [tier.delay_ms for tier in DelayTiers().tiers] == list(DEFAULT_TIER_DELAYS)


# for_delay


@pytest.mark.parametrize(
    ("remaining_ms", "tier_ms"),
    [
        (0, 0),
        (1, 0),
        (99, 0),
        (100, 100),
        (101, 100),
        (999, 100),
        (1_000, 1_000),
        (9_999, 1_000),
        (10_000, 10_000),
        (DAY - 1, 6 * HOUR),
        (DAY, DAY),
        (MAX_DELAY_MS, DAY),
    ],
)
def test_for_delay_picks_largest_tier_not_longer_than_remaining(remaining_ms, tier_ms):
    assert DelayTiers().for_delay(remaining_ms) == DelayTier(tier_ms)


def test_for_delay_never_exceeds_remaining_for_random_delays():
    tiers = DelayTiers()
    rng = random.Random(11)
    for _ in range(2_000):
        remaining = rng.randint(0, MAX_DELAY_MS)
        tier = tiers.for_delay(remaining)
        index = tiers.tiers.index(tier)
        # The chosen tier fits, and the next longer one (if any) would not
        assert tier.delay_ms <= remaining
        if index + 1 < len(tiers.tiers):
            assert tiers.tiers[index + 1].delay_ms > remaining


# topics


def test_topics_are_listed_shortest_delay_first():
    tiers = DelayTiers((60_000, 0, 1_000, 100))
    assert tiers.topics("payments.DQ") == [
        "payments.DQ.0",
        "payments.DQ.100ms",
        "payments.DQ.1s",
        "payments.DQ.1m",
    ]


# decide


def test_decide_delivers_when_eta_is_now():
    tiers = DelayTiers()
    decision = tiers.decide(DelayTier(10_000), written_at=NOW, eta=NOW, now=NOW)
    assert decision == Decision(Action.DELIVER)


def test_decide_delivers_overdue_record_even_before_tier_delay_elapsed():
    # Given a record written just now into the 1 h tier, whose eta has nonetheless passed
    tiers = DelayTiers()
    decision = tiers.decide(DelayTier(HOUR), written_at=NOW, eta=NOW - 1, now=NOW)
    assert decision.action is Action.DELIVER


def test_decide_waits_until_tier_release_when_it_comes_before_eta():
    # Given a record in the 10 s tier, written 3 s ago, due in a minute
    tiers = DelayTiers()
    decision = tiers.decide(DelayTier(10_000), written_at=NOW - 3_000, eta=NOW + MINUTE, now=NOW)
    # Then it waits for the tier's release, 7 s from now
    assert decision == Decision(Action.WAIT, wake_at=NOW + 7_000)


def test_decide_waits_until_eta_when_it_comes_before_tier_release():
    # Given a record in the 10 s tier due in 2 s (e.g. written before tiers changed)
    tiers = DelayTiers()
    decision = tiers.decide(DelayTier(10_000), written_at=NOW, eta=NOW + 2_000, now=NOW)
    assert decision == Decision(Action.WAIT, wake_at=NOW + 2_000)


def test_decide_in_zero_tier_waits_until_eta():
    # Given a record in tier 0, written long ago, not yet due
    tiers = DelayTiers()
    decision = tiers.decide(DelayTier(0), written_at=NOW - HOUR, eta=NOW + 50, now=NOW)
    # Then it waits for its eta, never hops
    assert decision == Decision(Action.WAIT, wake_at=NOW + 50)


def test_decide_hops_when_tier_delay_is_over_exactly_now():
    # Given a record whose 1 s tier delay ends exactly now, 250 ms before its eta
    tiers = DelayTiers()
    decision = tiers.decide(DelayTier(1_000), written_at=NOW - 1_000, eta=NOW + 250, now=NOW)
    # Then it hops to the tier that fits the 250 ms left
    assert decision == Decision(Action.HOP, tier=DelayTier(100))


def test_decide_hops_to_tier_fitting_time_left_after_late_wakeup():
    # Given a 1 min tier record whose delay ended 5 s ago, 45 s before its eta
    tiers = DelayTiers()
    decision = tiers.decide(DelayTier(MINUTE), written_at=NOW - 65_000, eta=NOW + 45_000, now=NOW)
    assert decision == Decision(Action.HOP, tier=DelayTier(10_000))


def test_decide_hops_into_same_tier_when_time_left_still_fits_it():
    tiers = DelayTiers()
    decision = tiers.decide(DelayTier(DAY), written_at=NOW - DAY, eta=NOW + 3 * DAY, now=NOW)
    assert decision == Decision(Action.HOP, tier=DelayTier(DAY))


def test_decide_hops_into_zero_tier_when_less_than_smallest_tier_left():
    tiers = DelayTiers()
    decision = tiers.decide(DelayTier(100), written_at=NOW - 100, eta=NOW + 40, now=NOW)
    assert decision == Decision(Action.HOP, tier=DelayTier(0))


# Simulation of a record's path through the tiers


def hop_bound(tiers: DelayTiers, max_delay_ms: int) -> int:
    """An upper bound on hops for delays up to ``max_delay_ms``.

    A record enters a non-zero tier ``d`` only with remaining time in ``[d, next)``, and each stay
    uses up ``d``, so it is written to ``d`` at most ``ceil(next / d) - 1`` times (at most
    ``max // d`` times for the top tier), plus once to tier 0; every write but the first is a hop.
    """
    delays = [tier.delay_ms for tier in tiers.tiers if tier.delay_ms]
    writes = 1 + max_delay_ms // delays[-1]
    writes += sum(math.ceil(upper / lower) - 1 for lower, upper in itertools.pairwise(delays))
    return writes - 1


def simulate(tiers: DelayTiers, delay_ms: int, start: int = NOW, lag=lambda: 0):
    """Follows one record through the tiers with a virtual clock.

    Returns (lateness, hops).  ``lag()`` is how late each wake-up happens.
    """
    now = start
    eta = start + delay_ms
    tier = tiers.for_delay(delay_ms)
    assert tier.delay_ms <= delay_ms
    written_at = now
    hops = 0
    for _ in range(1_000):
        decision = tiers.decide(tier, written_at=written_at, eta=eta, now=now)
        if decision.action is Action.DELIVER:
            return now - eta, hops
        if decision.action is Action.WAIT:
            # A wait makes progress and never overshoots the eta
            assert now < decision.wake_at <= eta
            now = decision.wake_at + lag()
        else:
            # A hop never goes to a tier longer than the time left
            assert decision.tier.delay_ms <= eta - now
            tier, written_at, hops = decision.tier, now, hops + 1
    raise AssertionError(f"record with delay {delay_ms} ms was never delivered")


def simulation_delays(seed: int) -> list[int]:
    rng = random.Random(seed)
    delays = [rng.randint(1, MAX_DELAY_MS) for _ in range(500)]
    # Log-uniform, so short delays are as well covered as long ones
    delays += [round(math.exp(rng.uniform(0, math.log(MAX_DELAY_MS)))) for _ in range(1_500)]
    # Every tier boundary and its neighbours, and the extremes
    for delay in DEFAULT_TIER_DELAYS:
        delays += [delay - 1, delay, delay + 1]
    delays += [1, MAX_DELAY_MS - 1, MAX_DELAY_MS]
    return [delay for delay in delays if 1 <= delay <= MAX_DELAY_MS]


def test_default_hop_bound_is_52():
    # A sanity check of the bound used below: 7+3+5+5+9+5+9+9+1 writes for the default tiers
    assert hop_bound(DelayTiers(), MAX_DELAY_MS) == 52


def test_simulated_records_are_delivered_exactly_at_eta_within_hop_bound():
    tiers = DelayTiers()
    bound = hop_bound(tiers, MAX_DELAY_MS)
    for delay in simulation_delays(seed=2024):
        lateness, hops = simulate(tiers, delay)
        assert lateness == 0, delay
        assert hops <= bound, delay


def test_longest_worst_case_delay_needs_fifty_one_hops():
    # Given the default tiers, 7 days minus 1 ms walks down through every tier the most times:
    # 5 more days, 3x6h, 5x1h, 5x10m, 9x1m, 5x10s, 9x1s, 9x100ms and tier 0
    lateness, hops = simulate(DelayTiers(), MAX_DELAY_MS - 1)
    assert lateness == 0
    assert hops == 51


def test_delay_equal_to_a_tier_is_delivered_without_hops():
    tiers = DelayTiers()
    for delay in DEFAULT_TIER_DELAYS[1:]:
        assert simulate(tiers, delay) == (0, 0), delay


def test_short_delay_goes_straight_to_zero_tier_and_is_on_time():
    # 99 ms fits no non-zero tier: written to tier 0, which holds it until its eta
    tiers = DelayTiers()
    assert tiers.for_delay(99) == DelayTier(0)
    assert simulate(tiers, 99) == (0, 0)


def test_late_wakeups_do_not_accumulate_into_lateness():
    # Given a consumer that wakes up to 50 ms late every time
    tiers = DelayTiers()
    rng = random.Random(99)
    for delay in simulation_delays(seed=7)[:500]:
        lateness, _ = simulate(tiers, delay, lag=lambda: rng.randint(0, 50))
        # Then a record is never later than one wake-up's lag
        assert 0 <= lateness <= 50, delay


def test_simulation_with_custom_tiers_is_on_time_within_its_bound():
    tiers = DelayTiers((0, 7, 50, 333, 2_000))
    bound = hop_bound(tiers, 20_000)
    rng = random.Random(5)
    for _ in range(500):
        delay = rng.randint(1, 20_000)
        lateness, hops = simulate(tiers, delay)
        assert lateness == 0, delay
        assert hops <= bound, delay
