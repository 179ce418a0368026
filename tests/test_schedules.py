"""Tests for broker.schedules: validation, cron and interval ticks, daylight saving, due ticks
under each missed policy, tick ids and the registry."""

import random
import uuid
from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise, takewhile
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

import broker.schedules
from broker.schedules import (
    DEFAULT_GRACE,
    MISSED_POLICIES,
    Schedule,
    Schedules,
    due_ticks,
    iter_ticks,
    next_tick,
    resume_point,
    tick_id,
)

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


def utc(*fields) -> datetime:
    return datetime(*fields, tzinfo=UTC)


def cron(expression: str, timezone: str = "UTC", missed: str = "latest") -> Schedule:
    return Schedule("job", "work", cron=expression, timezone=timezone, missed=missed)


def every(interval: timedelta, missed: str = "latest") -> Schedule:
    return Schedule("job", "work", every=interval, missed=missed)


def ticks_between(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """The ticks in ``(start, end)``, by forward iteration."""
    return list(takewhile(lambda tick: tick < end, iter_ticks(schedule, start)))


# Schedule validation


def test_both_cron_and_every_raise_value_error_naming_the_schedule():
    with pytest.raises(ValueError, match="schedule 'job': give exactly one of cron and every"):
        Schedule("job", "work", cron="* * * * *", every=MINUTE)


def test_neither_cron_nor_every_raises_value_error():
    with pytest.raises(ValueError, match="schedule 'job': give exactly one of cron and every"):
        Schedule("job", "work")


def test_bad_cron_field_raises_value_error_naming_expression_and_field():
    with pytest.raises(ValueError, match=r"schedule 'job': bad cron expression '61 \* \* \* \*': Bad minute"):
        cron("61 * * * *")


def test_cron_with_seven_fields_raises_value_error():
    with pytest.raises(ValueError, match="Wrong number of fields"):
        cron("0 0 0 * * * 2026")


def test_cron_that_never_fires_raises_value_error():
    # Given the last weekday of the month that must also be a Sunday: no such day
    with pytest.raises(ValueError, match="never fires"):
        cron("0 0 LW * */7")


def test_cron_that_is_not_a_string_raises_value_error():
    with pytest.raises(ValueError, match="cron must be a string"):
        Schedule("job", "work", cron=5)


def test_unknown_time_zone_raises_value_error():
    with pytest.raises(ValueError, match="schedule 'job': unknown time zone 'Europe/Atlantis'"):
        cron("0 3 * * *", timezone="Europe/Atlantis")


@pytest.mark.parametrize("interval", [timedelta(0), -SECOND])
def test_non_positive_interval_raises_value_error(interval):
    with pytest.raises(ValueError, match="schedule 'job': every must be a positive timedelta"):
        every(interval)


def test_interval_that_is_not_a_timedelta_raises_value_error():
    with pytest.raises(ValueError, match="every must be a positive timedelta, not 60"):
        Schedule("job", "work", every=60)


def test_interval_with_time_zone_raises_value_error():
    # An interval is in absolute time: a zone would be silently ignored
    with pytest.raises(ValueError, match="time zone 'Europe/Berlin' would be ignored"):
        Schedule("job", "work", every=HOUR, timezone=BERLIN)


def test_unknown_missed_policy_raises_value_error():
    with pytest.raises(ValueError, match="schedule 'job': missed must be one of .* not 'skip'"):
        cron("* * * * *", missed="skip")


def test_empty_name_raises_value_error():
    with pytest.raises(ValueError, match="schedule name must be a non-empty string"):
        Schedule("", "work", cron="* * * * *")


def test_empty_actor_name_raises_value_error():
    with pytest.raises(ValueError, match="schedule 'job': actor_name must be a non-empty string"):
        Schedule("job", "", cron="* * * * *")


def test_args_given_as_list_are_stored_as_tuple():
    schedule = Schedule("job", "work", args=[1, 2], cron="* * * * *")
    assert schedule.args == (1, 2)


def test_schedule_with_kwargs_is_hashable():
    schedule = Schedule("job", "work", kwargs={"kind": "daily"}, cron="* * * * *")
    assert hash(schedule) == hash(Schedule("job", "work", kwargs={"kind": "weekly"}, cron="* * * * *"))


# Cron ticks


def test_daily_cron_next_tick_is_later_the_same_day():
    assert next_tick(cron("0 3 * * *"), utc(2026, 5, 4, 1, 0)) == utc(2026, 5, 4, 3, 0)


def test_daily_cron_next_tick_after_todays_tick_is_tomorrow():
    assert next_tick(cron("0 3 * * *"), utc(2026, 5, 4, 3, 0, 1)) == utc(2026, 5, 5, 3, 0)


def test_next_tick_is_strictly_after_a_tick():
    # Given `after` exactly on a tick, that tick is not returned
    assert next_tick(cron("*/5 * * * *"), utc(2026, 5, 4, 10, 5)) == utc(2026, 5, 4, 10, 10)


def test_next_tick_after_a_fraction_of_a_second_past_a_tick_is_the_next_one():
    assert next_tick(cron("*/5 * * * *"), utc(2026, 5, 4, 10, 5, 0, 1)) == utc(2026, 5, 4, 10, 10)


def test_weekday_cron_skips_the_weekend():
    # Given a Friday afternoon, the next weekday-morning tick is on Monday
    assert next_tick(cron("0 9 * * MON-FRI"), utc(2026, 5, 8, 15, 0)) == utc(2026, 5, 11, 9, 0)


def test_six_field_cron_ticks_every_twenty_seconds():
    ticks = list(islice(iter_ticks(cron("*/20 * * * * *"), utc(2026, 5, 4, 10, 0, 5)), 4))
    assert ticks == [
        utc(2026, 5, 4, 10, 0, 20),
        utc(2026, 5, 4, 10, 0, 40),
        utc(2026, 5, 4, 10, 1, 0),
        utc(2026, 5, 4, 10, 1, 20),
    ]


def test_six_field_cron_leading_field_is_seconds():
    assert next_tick(cron("15 30 9 * * *"), utc(2026, 5, 4)) == utc(2026, 5, 4, 9, 30, 15)


def test_cron_in_new_york_fires_at_new_york_wall_clock_time_in_summer():
    # 09:00 EDT is 13:00 UTC
    assert next_tick(cron("0 9 * * *", NEW_YORK), utc(2026, 7, 1)) == utc(2026, 7, 1, 13, 0)


def test_cron_in_new_york_fires_at_new_york_wall_clock_time_in_winter():
    # 09:00 EST is 14:00 UTC
    assert next_tick(cron("0 9 * * *", NEW_YORK), utc(2026, 1, 15)) == utc(2026, 1, 15, 14, 0)


def test_same_cron_in_utc_fires_at_utc_wall_clock_time():
    assert next_tick(cron("0 9 * * *"), utc(2026, 7, 1)) == utc(2026, 7, 1, 9, 0)


def test_cron_day_boundary_is_the_schedule_zone_s_midnight():
    # Given 02:00 UTC on 1 July, still 30 June 22:00 in New York: the midnight tick is 04:00 UTC
    assert next_tick(cron("0 0 * * *", NEW_YORK), utc(2026, 7, 1, 2, 0)) == utc(2026, 7, 1, 4, 0)


def test_next_tick_is_returned_in_utc_whatever_the_zone_of_after():
    tick = next_tick(cron("0 9 * * *", NEW_YORK), datetime(2026, 7, 1, tzinfo=ZoneInfo(BERLIN)))
    assert tick.tzinfo is UTC


def test_next_tick_with_naive_after_raises_value_error():
    with pytest.raises(ValueError, match="after must be an aware datetime"):
        next_tick(cron("0 9 * * *"), datetime(2026, 7, 1))


def test_utc_cron_needs_no_time_zone_database(monkeypatch):
    # Given a machine without a time zone database (Windows, slim images without tzdata)
    def missing(name):
        raise ZoneInfoNotFoundError(name)

    monkeypatch.setattr(broker.schedules, "ZoneInfo", missing)
    # Then a UTC schedule is still valid and ticks
    assert next_tick(cron("0 3 * * *"), utc(2026, 5, 4)) == utc(2026, 5, 4, 3)


# Interval ticks


def test_interval_ticks_on_multiples_of_the_interval():
    ticks = list(islice(iter_ticks(every(10 * SECOND), utc(2026, 5, 4, 10, 0, 3)), 3))
    assert ticks == [utc(2026, 5, 4, 10, 0, 10), utc(2026, 5, 4, 10, 0, 20), utc(2026, 5, 4, 10, 0, 30)]


def test_interval_is_anchored_on_the_epoch_not_on_midnight_or_after():
    # Given every 7 minutes: a day is 205 intervals and 300 s, so 2 January 00:00 UTC is 300 s
    # past a tick and the next one is at 00:02, not 00:07
    assert next_tick(every(7 * MINUTE), utc(2026, 1, 2)) == utc(2026, 1, 2, 0, 2)


def test_interval_next_tick_is_strictly_after_a_tick():
    assert next_tick(every(10 * SECOND), utc(2026, 5, 4, 10, 0, 10)) == utc(2026, 5, 4, 10, 0, 20)


def test_interval_ticks_do_not_depend_on_the_zone_of_after():
    after = utc(2026, 5, 4, 10, 0, 3)
    assert next_tick(every(10 * SECOND), after.astimezone(ZoneInfo(NEW_YORK))) == utc(2026, 5, 4, 10, 0, 10)


def test_interval_ticks_keep_their_pace_across_a_dst_change():
    # Given an hourly interval over Berlin's spring-forward night: absolute time, no gap
    ticks = ticks_between(every(HOUR), utc(2026, 3, 28, 23, 30), utc(2026, 3, 29, 3, 0))
    assert ticks == [utc(2026, 3, 29, hour) for hour in range(3)]


# Daylight saving: Europe/Berlin, 29 March 2026 02:00 CET -> 03:00 CEST, 25 October 03:00 CEST -> 02:00 CET


def test_berlin_daily_time_in_the_gap_fires_at_the_end_of_the_gap():
    # 02:30 does not exist that night: it fires at 03:00 CEST, 01:00 UTC
    assert next_tick(cron("30 2 * * *", BERLIN), utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1, 0)


def test_berlin_daily_time_in_the_gap_fires_once_a_day_around_the_change():
    ticks = ticks_between(cron("30 2 * * *", BERLIN), utc(2026, 3, 27, 12), utc(2026, 3, 30, 12))
    assert ticks == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]


def test_berlin_six_field_time_in_the_gap_also_fires_at_the_end_of_the_gap():
    # cronsim treats 6-field expressions differently in its own zone mode; the rules here do not
    assert next_tick(cron("0 30 2 * * *", BERLIN), utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1, 0)


def test_berlin_daily_time_in_the_overlap_fires_once_at_its_first_occurrence():
    # 02:30 happens twice: at 02:30 CEST (00:30 UTC) and 02:30 CET (01:30 UTC); only the first fires
    ticks = ticks_between(cron("30 2 * * *", BERLIN), utc(2026, 10, 24, 12), utc(2026, 10, 26, 12))
    assert ticks == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


def test_berlin_hourly_at_the_gap_fires_each_hour_of_absolute_time_once():
    # 01:00 CET, then 02:00 (missing) and 03:00 CEST are both 01:00 UTC: one tick
    ticks = ticks_between(cron("0 * * * *", BERLIN), utc(2026, 3, 28, 23, 30), utc(2026, 3, 29, 2, 30))
    assert ticks == [utc(2026, 3, 29, 0), utc(2026, 3, 29, 1), utc(2026, 3, 29, 2)]


def test_berlin_half_past_hourly_in_the_gap_fires_at_the_end_of_the_gap():
    # 01:30 CET, 02:30 (missing: fires at 03:00 CEST), 03:30 CEST
    ticks = ticks_between(cron("30 * * * *", BERLIN), utc(2026, 3, 29, 0), utc(2026, 3, 29, 2))
    assert ticks == [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 30)]


def test_berlin_quarter_hourly_times_in_the_gap_become_one_tick():
    ticks = ticks_between(cron("*/15 * * * *", BERLIN), utc(2026, 3, 29, 0, 20), utc(2026, 3, 29, 1, 20))
    assert ticks == [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 0, 45), utc(2026, 3, 29, 1), utc(2026, 3, 29, 1, 15)]


def test_berlin_hourly_on_spring_forward_day_fires_twenty_three_times():
    # The local day (00:00 CET to 00:00 CEST next day) has 23 hours, each with one tick
    ticks = ticks_between(cron("0 * * * *", BERLIN), utc(2026, 3, 28, 22, 59), utc(2026, 3, 29, 21, 59))
    assert len(ticks) == len(set(ticks)) == 23
    assert all(later - earlier == HOUR for earlier, later in pairwise(ticks))


def test_berlin_hourly_in_the_overlap_skips_the_second_pass_of_the_repeated_hour():
    # 02:00 CEST is 00:00 UTC; 02:00 CET (01:00 UTC) repeats it and does not fire; 03:00 CET is 02:00 UTC
    ticks = ticks_between(cron("0 * * * *", BERLIN), utc(2026, 10, 24, 22, 30), utc(2026, 10, 25, 2, 30))
    assert ticks == [utc(2026, 10, 24, 23), utc(2026, 10, 25, 0), utc(2026, 10, 25, 2)]


def test_berlin_hourly_on_fall_back_day_fires_once_per_wall_clock_hour():
    # The local day has 25 hours of absolute time and 24 wall-clock hours
    ticks = ticks_between(cron("0 * * * *", BERLIN), utc(2026, 10, 24, 21, 59), utc(2026, 10, 25, 22, 59))
    local_hours = [tick.astimezone(ZoneInfo(BERLIN)).hour for tick in ticks]
    assert local_hours == list(range(24))


def test_berlin_minutely_on_fall_back_day_fires_once_per_wall_clock_minute():
    ticks = ticks_between(cron("* * * * *", BERLIN), utc(2026, 10, 24, 21, 59, 59), utc(2026, 10, 25, 22, 59, 59))
    assert len(ticks) == len(set(ticks)) == 24 * 60
    assert not [tick for tick in ticks if utc(2026, 10, 25, 1) <= tick < utc(2026, 10, 25, 2)]


def test_next_tick_from_the_second_pass_of_the_repeated_hour_is_after_the_overlap():
    # Given 02:30 CET, the second pass: the wall-clock times left in that hour fired in the first pass
    assert next_tick(cron("*/10 * * * *", BERLIN), utc(2026, 10, 25, 1, 30)) == utc(2026, 10, 25, 2, 0)


# Daylight saving: America/New_York, 8 March 2026 02:00 EST -> 03:00 EDT, 1 November 02:00 EDT -> 01:00 EST


def test_new_york_daily_time_in_the_gap_fires_at_the_end_of_the_gap():
    # 02:30 does not exist: it fires at 03:00 EDT, 07:00 UTC
    ticks = ticks_between(cron("30 2 * * *", NEW_YORK), utc(2026, 3, 7, 12), utc(2026, 3, 9, 12))
    assert ticks == [utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]


def test_new_york_daily_time_in_the_overlap_fires_once_at_its_first_occurrence():
    # 01:30 EDT is 05:30 UTC; 01:30 EST (06:30 UTC) repeats it
    ticks = ticks_between(cron("30 1 * * *", NEW_YORK), utc(2026, 10, 31, 12), utc(2026, 11, 2, 12))
    assert ticks == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]


def test_new_york_hourly_at_the_gap_fires_each_hour_of_absolute_time_once():
    ticks = ticks_between(cron("0 * * * *", NEW_YORK), utc(2026, 3, 8, 5, 30), utc(2026, 3, 8, 8, 30))
    assert ticks == [utc(2026, 3, 8, 6), utc(2026, 3, 8, 7), utc(2026, 3, 8, 8)]


def test_new_york_hourly_in_the_overlap_skips_the_second_pass_of_the_repeated_hour():
    # 01:00 EDT is 05:00 UTC; 01:00 EST (06:00 UTC) does not fire; 02:00 EST is 07:00 UTC
    ticks = ticks_between(cron("0 * * * *", NEW_YORK), utc(2026, 11, 1, 4, 30), utc(2026, 11, 1, 7, 30))
    assert ticks == [utc(2026, 11, 1, 5), utc(2026, 11, 1, 7)]


def test_new_york_hourly_on_fall_back_day_fires_once_per_wall_clock_hour():
    ticks = ticks_between(cron("0 * * * *", NEW_YORK), utc(2026, 11, 1, 3, 59), utc(2026, 11, 2, 4, 59))
    local_hours = [tick.astimezone(ZoneInfo(NEW_YORK)).hour for tick in ticks]
    assert local_hours == list(range(24))


# due_ticks


@pytest.mark.parametrize("missed", MISSED_POLICIES)
def test_schedule_seen_for_the_first_time_fires_no_past_tick(missed):
    # Given a minutely schedule never fired, and a tick a moment ago
    assert due_ticks(cron("* * * * *", missed=missed), None, utc(2026, 5, 4, 10, 0, 0, 1)) == []


@pytest.mark.parametrize("missed", MISSED_POLICIES)
def test_nothing_is_due_between_ticks(missed):
    # Given the 10:00 tick fired, at 10:00:30 the next is not due
    assert due_ticks(cron("* * * * *", missed=missed), utc(2026, 5, 4, 10), utc(2026, 5, 4, 10, 0, 30)) == []


@pytest.mark.parametrize("missed", MISSED_POLICIES)
def test_tick_seen_just_after_it_came_due_fires(missed):
    # Given 10:00 fired, and the clock waking up 200 ms after 10:01
    due = due_ticks(cron("* * * * *", missed=missed), utc(2026, 5, 4, 10), utc(2026, 5, 4, 10, 1, 0, 200_000))
    assert due == [utc(2026, 5, 4, 10, 1)]


@pytest.mark.parametrize("missed", MISSED_POLICIES)
def test_tick_at_exactly_now_is_due(missed):
    due = due_ticks(every(MINUTE, missed=missed), utc(2026, 5, 4, 10), utc(2026, 5, 4, 10, 1))
    assert due == [utc(2026, 5, 4, 10, 1)]


@pytest.mark.parametrize("missed", MISSED_POLICIES)
def test_last_fired_tick_is_not_due_again(missed):
    assert due_ticks(every(MINUTE, missed=missed), utc(2026, 5, 4, 10), utc(2026, 5, 4, 10)) == []


def test_latest_policy_fires_only_the_latest_missed_tick():
    # Given 10:00 fired and no clock until 10:05:30
    due = due_ticks(cron("* * * * *"), utc(2026, 5, 4, 10), utc(2026, 5, 4, 10, 5, 30))
    assert due == [utc(2026, 5, 4, 10, 5)]


def test_all_policy_fires_every_missed_tick_oldest_first():
    due = due_ticks(cron("* * * * *", missed="all"), utc(2026, 5, 4, 10), utc(2026, 5, 4, 10, 3, 30))
    assert due == [utc(2026, 5, 4, 10, 1), utc(2026, 5, 4, 10, 2), utc(2026, 5, 4, 10, 3)]


def test_all_policy_fires_the_most_recent_max_ticks():
    # Given a day without a clock for a minutely schedule, and room for 3
    due = due_ticks(cron("* * * * *", missed="all"), utc(2026, 5, 3, 10), utc(2026, 5, 4, 10, 0, 30), max_ticks=3)
    assert due == [utc(2026, 5, 4, 9, 58), utc(2026, 5, 4, 9, 59), utc(2026, 5, 4, 10)]


def test_all_policy_fires_a_week_of_missed_ticks_up_to_the_default_bound():
    due = due_ticks(cron("* * * * *", missed="all"), utc(2026, 4, 27), utc(2026, 5, 4))
    assert len(due) == 1000
    assert due[-1] == utc(2026, 5, 4)


def test_none_policy_skips_missed_ticks_when_the_latest_is_past_the_grace():
    # Given 10:00 fired and no clock until 10:05:30: 10:05 is 30 s late
    due = due_ticks(cron("* * * * *", missed="none"), utc(2026, 5, 4, 10), utc(2026, 5, 4, 10, 5, 30))
    assert due == []


def test_none_policy_fires_only_the_latest_when_it_is_within_the_grace():
    # Given no clock from 10:00 until 2 s after 10:05: 10:01-10:04 are skipped, 10:05 is on time
    due = due_ticks(cron("* * * * *", missed="none"), utc(2026, 5, 4, 10), utc(2026, 5, 4, 10, 5, 2))
    assert due == [utc(2026, 5, 4, 10, 5)]


def test_none_policy_fires_a_tick_exactly_grace_late():
    now = utc(2026, 5, 4, 10, 1) + DEFAULT_GRACE
    assert due_ticks(cron("* * * * *", missed="none"), utc(2026, 5, 4, 10), now) == [utc(2026, 5, 4, 10, 1)]


def test_none_policy_skips_a_tick_just_over_grace_late():
    now = utc(2026, 5, 4, 10, 1) + DEFAULT_GRACE + timedelta(microseconds=1)
    assert due_ticks(cron("* * * * *", missed="none"), utc(2026, 5, 4, 10), now) == []


def test_none_policy_grace_can_be_widened():
    due = due_ticks(cron("0 3 * * *", missed="none"), utc(2026, 5, 3, 3), utc(2026, 5, 4, 3, 1), grace=2 * MINUTE)
    assert due == [utc(2026, 5, 4, 3)]


def test_last_fired_after_now_fires_nothing():
    # Given a clock whose time is behind the one that recorded last_fired
    assert due_ticks(cron("* * * * *", missed="all"), utc(2026, 5, 4, 10, 5), utc(2026, 5, 4, 10, 2)) == []


def test_due_ticks_with_aware_non_utc_now_are_returned_in_utc():
    now = utc(2026, 5, 4, 10, 1).astimezone(ZoneInfo(NEW_YORK))
    [tick] = due_ticks(cron("* * * * *"), utc(2026, 5, 4, 10), now)
    assert tick.tzinfo is UTC


def test_due_ticks_with_naive_now_raises_value_error():
    with pytest.raises(ValueError, match="now must be an aware datetime"):
        due_ticks(cron("* * * * *"), utc(2026, 5, 4, 10), datetime(2026, 5, 4, 10, 1))


def test_due_ticks_with_naive_last_fired_raises_value_error():
    with pytest.raises(ValueError, match="last_fired must be an aware datetime"):
        due_ticks(cron("* * * * *"), datetime(2026, 5, 4, 10), utc(2026, 5, 4, 10, 1))


def test_due_ticks_with_max_ticks_below_one_raises_value_error():
    with pytest.raises(ValueError, match="max_ticks must be at least 1"):
        due_ticks(cron("* * * * *"), utc(2026, 5, 4, 10), utc(2026, 5, 4, 10, 1), max_ticks=0)


def test_due_ticks_with_negative_grace_raises_value_error():
    with pytest.raises(ValueError, match="grace must not be negative"):
        due_ticks(cron("* * * * *"), utc(2026, 5, 4, 10), utc(2026, 5, 4, 10, 1), grace=-SECOND)


def test_all_policy_over_the_fall_back_night_matches_forward_iteration():
    # Given a clock down from 22:30 UTC to 02:30 UTC across Berlin's fall-back
    due = due_ticks(cron("0 * * * *", BERLIN, missed="all"), utc(2026, 10, 24, 22, 30), utc(2026, 10, 25, 2, 30))
    assert due == [utc(2026, 10, 24, 23), utc(2026, 10, 25, 0), utc(2026, 10, 25, 2)]


def test_latest_policy_in_the_second_pass_of_the_repeated_hour_fires_its_first_pass():
    # Given 01:50 UTC (02:50 CET, second pass): the latest tick is 02:50 CEST, 00:50 UTC
    due = due_ticks(cron("*/10 * * * *", BERLIN), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 50))
    assert due == [utc(2026, 10, 25, 0, 50)]


@pytest.mark.parametrize(
    ("expression", "timezone", "days"),
    [
        ("*/7 * * * *", BERLIN, (utc(2026, 3, 28, 20), utc(2026, 10, 24, 20))),
        ("30 1,2 * * *", NEW_YORK, (utc(2026, 3, 7, 20), utc(2026, 10, 31, 20))),
        ("15 */13 * * * *", "Australia/Lord_Howe", (utc(2026, 4, 4, 8), utc(2026, 10, 3, 8))),
    ],
)
def test_missed_ticks_found_backwards_equal_ticks_found_forwards(expression, timezone, days):
    # Given random clock outages on DST-change days (Lord Howe shifts by 30 minutes)
    schedule = cron(expression, timezone, missed="all")
    rng = random.Random(31)
    for start in days:
        for _ in range(100):
            last_fired = start + timedelta(seconds=rng.randint(0, 12 * 3600))
            now = last_fired + timedelta(seconds=rng.randint(0, 4 * 3600), microseconds=rng.randint(0, 999_999))
            expected = ticks_between(schedule, last_fired, now + timedelta(microseconds=1))
            assert due_ticks(schedule, last_fired, now, max_ticks=10_000) == expected, (last_fired, now)


# resume_point


def test_resume_point_of_a_new_schedule_is_now_in_utc():
    now = utc(2026, 5, 4, 10, 0, 30).astimezone(ZoneInfo(BERLIN))
    point = resume_point(None, now, [])
    assert point == utc(2026, 5, 4, 10, 0, 30)
    assert point.tzinfo is UTC


def test_resume_point_after_firing_is_the_last_tick_fired():
    fired = [utc(2026, 5, 4, 10, 1), utc(2026, 5, 4, 10, 2)]
    assert resume_point(utc(2026, 5, 4, 10), utc(2026, 5, 4, 10, 2, 30), fired) == utc(2026, 5, 4, 10, 2)


def test_resume_point_without_firing_is_last_fired_unchanged():
    assert resume_point(utc(2026, 5, 4, 10), utc(2026, 5, 4, 10, 0, 30), []) == utc(2026, 5, 4, 10)


def test_first_tick_of_a_new_schedule_is_the_first_after_it_was_seen():
    # Given a clock that first sees a minutely schedule at 10:00:30, then wakes at 10:01:00.2
    schedule = cron("* * * * *")
    seen_at = utc(2026, 5, 4, 10, 0, 30)
    point = resume_point(None, seen_at, due_ticks(schedule, None, seen_at))
    # Then the 10:01 tick fires, and 10:00 never does
    assert due_ticks(schedule, point, utc(2026, 5, 4, 10, 1, 0, 200_000)) == [utc(2026, 5, 4, 10, 1)]


@pytest.mark.parametrize("missed", MISSED_POLICIES)
def test_running_clock_fires_every_tick_once_over_a_dst_night(missed):
    # Given a clock waking up a random 0-2 s after each tick, through Berlin's fall-back night
    schedule = cron("*/5 * * * *", BERLIN, missed=missed)
    rng = random.Random(5)
    start, end = utc(2026, 10, 24, 21), utc(2026, 10, 25, 5)
    last_fired = resume_point(None, start, [])
    fired = []
    while (tick := next_tick(schedule, last_fired)) < end:
        now = tick + timedelta(milliseconds=rng.randint(0, 2_000))
        due = due_ticks(schedule, last_fired, now)
        fired += due
        last_fired = resume_point(last_fired, now, due)
    # Then it fired exactly the schedule's ticks, each once
    assert fired == ticks_between(schedule, start, end)


# tick_id


def test_tick_id_is_a_stable_uuid5():
    # A changed formula would give running clocks different ids for the same tick
    schedule = Schedule("nightly-report", "send_report", cron="0 3 * * *")
    assert tick_id(schedule, utc(2026, 1, 1, 3)) == "83adc789-36e7-5e23-b2a9-ab6e00816399"


def test_tick_id_is_the_same_for_the_same_instant_in_another_zone():
    schedule = cron("0 3 * * *")
    tick = utc(2026, 1, 1, 3)
    assert tick_id(schedule, tick) == tick_id(schedule, tick.astimezone(ZoneInfo(NEW_YORK)))


def test_tick_ids_of_different_ticks_differ():
    schedule = cron("* * * * * *")
    ticks = list(islice(iter_ticks(schedule, utc(2026, 1, 1)), 1000))
    assert len({tick_id(schedule, tick) for tick in ticks}) == 1000


def test_tick_ids_of_different_schedules_at_the_same_tick_differ():
    tick = utc(2026, 1, 1, 3)
    first = Schedule("reports", "send_report", cron="0 3 * * *")
    second = Schedule("cleanup", "send_report", cron="0 3 * * *")
    assert tick_id(first, tick) != tick_id(second, tick)


def test_tick_id_is_a_version_5_uuid_string():
    assert uuid.UUID(tick_id(cron("0 3 * * *"), utc(2026, 1, 1, 3))).version == 5


def test_tick_id_with_naive_tick_raises_value_error():
    with pytest.raises(ValueError, match="tick must be an aware datetime"):
        tick_id(cron("0 3 * * *"), datetime(2026, 1, 1, 3))


# Schedules registry


@pytest.fixture
def stub_broker():
    return StubBroker()


@pytest.fixture
def send_report(stub_broker):
    @dramatiq.actor(broker=stub_broker, queue_name="reports")
    def send_report(kind):
        return kind

    return send_report


def test_cron_declares_a_schedule_for_an_actor_name():
    schedules = Schedules()
    schedule = schedules.cron("0 3 * * *", "send_report", args=("daily",), kwargs={"to": "ops"}, timezone=BERLIN)
    assert (schedule.actor_name, schedule.args, schedule.kwargs) == ("send_report", ("daily",), {"to": "ops"})
    assert (schedule.cron, schedule.timezone, schedule.queue_name) == ("0 3 * * *", BERLIN, None)


def test_cron_takes_actor_name_and_queue_from_an_actor(send_report):
    schedule = Schedules().cron("0 3 * * *", send_report)
    assert (schedule.actor_name, schedule.queue_name) == ("send_report", "reports")


def test_every_declares_an_interval_schedule(send_report):
    schedule = Schedules().every(timedelta(minutes=5), send_report, missed="all")
    assert (schedule.every, schedule.cron, schedule.missed) == (timedelta(minutes=5), None, "all")


def test_default_cron_name_is_actor_name_and_expression():
    assert Schedules().cron("0  3 * * *", "send_report").name == "send_report 0 3 * * *"


def test_default_cron_name_includes_a_time_zone_other_than_utc():
    assert Schedules().cron("0 3 * * *", "send_report", timezone=BERLIN).name == "send_report 0 3 * * * Europe/Berlin"


def test_default_interval_name_is_actor_name_and_seconds():
    assert Schedules().every(timedelta(minutes=5), "poll").name == "poll every 300s"


def test_default_interval_name_of_a_sub_second_interval_is_in_microseconds():
    assert Schedules().every(timedelta(milliseconds=250), "poll").name == "poll every 250000us"


def test_explicit_name_is_used():
    assert Schedules().cron("0 3 * * *", "send_report", name="nightly").name == "nightly"


def test_same_actor_can_have_schedules_with_different_timings():
    schedules = Schedules()
    schedules.cron("0 3 * * *", "send_report")
    schedules.cron("0 15 * * *", "send_report")
    assert len(schedules) == 2


def test_duplicate_name_raises_value_error():
    schedules = Schedules()
    schedules.cron("0 3 * * *", "send_report", name="nightly")
    with pytest.raises(ValueError, match="duplicate schedule name 'nightly'"):
        schedules.every(HOUR, "cleanup", name="nightly")


def test_same_actor_and_timing_twice_raises_value_error():
    schedules = Schedules()
    schedules.cron("0 3 * * *", "send_report", args=("daily",))
    with pytest.raises(ValueError, match="duplicate schedule name 'send_report 0 3 \\* \\* \\*'"):
        schedules.cron("0 3 * * *", "send_report", args=("weekly",))


def test_invalid_schedule_is_not_declared():
    schedules = Schedules()
    with pytest.raises(ValueError, match="bad cron expression"):
        schedules.cron("0 25 * * *", "send_report")
    assert len(schedules) == 0


def test_decorator_declares_the_schedule_and_returns_the_actor(stub_broker):
    schedules = Schedules()

    @schedules.every(timedelta(seconds=30), name="heartbeat")
    @dramatiq.actor(broker=stub_broker)
    def beat():
        pass

    [schedule] = schedules
    assert isinstance(beat, dramatiq.Actor)
    assert (schedule.name, schedule.actor_name, schedule.queue_name) == ("heartbeat", "beat", "default")


def test_iterating_yields_schedules_in_declaration_order():
    schedules = Schedules()
    schedules.every(HOUR, "c")
    schedules.cron("0 3 * * *", "a")
    schedules.every(MINUTE, "b")
    assert [schedule.actor_name for schedule in schedules] == ["c", "a", "b"]


def test_actor_that_is_neither_an_actor_nor_a_name_raises_type_error():
    with pytest.raises(TypeError, match="actor must be a Dramatiq actor or an actor name"):
        Schedules().cron("0 3 * * *", 42)


def test_unknown_option_raises_type_error():
    with pytest.raises(TypeError, match="unexpected keyword argument 'queue'"):
        Schedules().cron("0 3 * * *", "send_report", queue="reports")
