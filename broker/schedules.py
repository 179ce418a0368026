"""Periodic tasks: schedules declared in code, and which of their ticks are due, decided by pure logic.

A :class:`Schedule` sends one actor message per *tick*.  Its ticks are instants, returned as aware
UTC datetimes, and are the same in every clock process, so two clocks agree on what is due and
give the same tick the same message id (:func:`tick_id`), which makes a tick sent twice (by a
clock that crashed after sending, or during a handover) one message for whatever deduplicates it.
Nothing here reads the clock or does I/O: ``now`` is always passed in.

Two kinds of schedule:

* ``cron``: a cron expression of 5 fields (minute hour day month weekday), or 6 with a leading
  seconds field, parsed by ``cronsim`` (Debian cron's syntax: ``*/5``, ``1-5``, ``MON``, ``L``,
  ``LW``, ``MON#2``; when either day field starts with ``*`` both must match, otherwise either).
  It is wall-clock time in the schedule's IANA time zone.
* ``every``: a fixed interval in absolute time.  Its ticks are the whole multiples of the interval
  since the Unix epoch in UTC, so every 10 s ticks at ..:00, ..:10 and every 5 min at ..:00,
  ..:05 in every process; an interval that does not divide a day drifts against the wall clock.
  Such a schedule has no time zone.

Daylight saving time, for cron schedules (each wall-clock time the expression names fires once):

* In the spring-forward gap, a wall-clock time that does not exist fires once, at the first
  instant after the gap: ``30 2 * * *`` in Europe/Berlin on the last Sunday of March fires at
  03:00 CEST (01:00 UTC).  Several such times (``*/15 * * * *``) become that one tick.
* In the fall-back overlap, a wall-clock time that occurs twice fires once, at its first
  occurrence (``fold=0``).  An hourly or minutely expression fires through the first pass of the
  repeated hour and is silent during the second, so an hour of absolute time has no tick.

``cronsim``'s own time-zone mode copies Debian cron, which runs hourly jobs twice in the overlap and
skips their times in the gap; so expressions are iterated here in naive wall-clock time and mapped
to instants by the rules above.

The clock keeps, per schedule name, the last tick it fired.  :func:`due_ticks` takes it and ``now``
and returns the ticks to send now; :func:`resume_point` says what to record once they are sent.  A
schedule seen for the first time fires none of its past ticks: ``now`` is recorded, and its first
tick is the first one after that.  Then the ticks in ``(last_fired, now]`` are due, and the
schedule's ``missed`` policy says which of them fire after a time when no clock ran:

* ``"latest"`` (the default): the latest of them, once.
* ``"all"``: all of them, oldest first, at most ``max_ticks`` (the most recent ones).
* ``"none"``: only the latest, and only if it is at most ``grace`` old; older ones are skipped.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

#: The ``missed`` policies: what fires of the ticks that came due while no clock ran.
MISSED_POLICIES = ("latest", "all", "none")

#: Interval ticks are whole multiples of the interval since this instant.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: How late a tick may be seen and still be on time under the ``"none"`` policy.  The clock wakes up
#: for a tick within a fraction of a second; 10 s absorbs a slow poll, a pause or a busy machine,
#: while a restart or an outage (tens of seconds or more) counts as time when no clock ran.
DEFAULT_GRACE = timedelta(seconds=10)

#: How many missed ticks the ``"all"`` policy fires at once by default.
DEFAULT_MAX_TICKS = 1000

#: The namespace of tick message ids (uuid5).  Changing it changes every id: never do.
TICK_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "kafka-tasks:schedule-tick")

_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class Schedule:
    """One periodic task: an actor, its arguments, and when to send them.

    Parameters:
      name: Unique id of the schedule.  The clock keys its state and the tick ids on it, so a
        renamed schedule starts afresh.
      actor_name: The actor to send a message to.
      args: The actor's positional arguments.
      kwargs: The actor's keyword arguments.
      cron: A cron expression of 5 fields, or 6 with a leading seconds field, in ``timezone``.
      every: A fixed interval, in absolute time, anchored on the Unix epoch in UTC.
      timezone: The IANA time zone of ``cron``.  Only ``"UTC"`` for ``every``.
      missed: ``"latest"``, ``"all"`` or ``"none"``: see the module docstring.
      queue_name: The actor's queue, if known.

    Raises:
      ValueError: Naming the schedule and what is wrong: both or neither of ``cron`` and
        ``every``, a bad or never-firing cron expression, an unknown time zone, a time zone on an
        interval, a non-positive interval, an unknown policy or an empty name.
    """

    name: str
    actor_name: str
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict, hash=False)
    cron: str | None = None
    every: timedelta | None = None
    timezone: str = "UTC"
    missed: str = "latest"
    queue_name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"schedule name must be a non-empty string, not {self.name!r}")
        if not isinstance(self.actor_name, str) or not self.actor_name:
            raise ValueError(f"schedule {self.name!r}: actor_name must be a non-empty string")
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", dict(self.kwargs))
        if (self.cron is None) == (self.every is None):
            raise ValueError(f"schedule {self.name!r}: give exactly one of cron and every")
        if self.missed not in MISSED_POLICIES:
            raise ValueError(f"schedule {self.name!r}: missed must be one of {MISSED_POLICIES}, not {self.missed!r}")
        try:
            _zone(self.timezone)
        except (ValueError, TypeError, KeyError):  # ZoneInfoNotFoundError is a KeyError
            raise ValueError(f"schedule {self.name!r}: unknown time zone {self.timezone!r}") from None
        if self.every is not None:
            self._check_every()
        else:
            self._check_cron()

    def _check_every(self) -> None:
        if not isinstance(self.every, timedelta) or self.every <= timedelta(0):
            raise ValueError(f"schedule {self.name!r}: every must be a positive timedelta, not {self.every!r}")
        if self.timezone != "UTC":
            raise ValueError(
                f"schedule {self.name!r}: an interval is in absolute time, anchored on the epoch in UTC; "
                f"time zone {self.timezone!r} would be ignored (use cron for wall-clock times)"
            )

    def _check_cron(self) -> None:
        if not isinstance(self.cron, str):
            raise ValueError(f"schedule {self.name!r}: cron must be a string, not {self.cron!r}")
        try:
            next(CronSim(self.cron, datetime(2000, 1, 1)))
        except CronSimError as error:
            raise ValueError(f"schedule {self.name!r}: bad cron expression {self.cron!r}: {error}") from None
        except StopIteration:
            raise ValueError(f"schedule {self.name!r}: cron expression {self.cron!r} never fires") from None

    @property
    def timing(self) -> str:
        """When it fires, as text: the cron expression (and zone unless UTC), or ``every <n>s``."""
        if self.every is not None:
            if self.every % _SECOND:
                return f"every {self.every // timedelta(microseconds=1)}us"
            return f"every {self.every // _SECOND}s"
        expression = " ".join(self.cron.split())
        return expression if self.timezone == "UTC" else f"{expression} {self.timezone}"


def _zone(name: str) -> tzinfo:
    # UTC needs no time zone database (Windows and slim images may lack one)
    return UTC if name == "UTC" else ZoneInfo(name)


def _require_aware(value: datetime, what: str) -> None:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime, not {value!r}")


# Cron in wall-clock time


def _gap_end(wall: datetime, zone: tzinfo) -> datetime:
    """Returns the first instant after the spring-forward gap that the naive ``wall`` falls in."""
    # The two readings of a time in a gap straddle the transition; find it to the second.
    readings = sorted(wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1))
    before, after = readings
    offset_before = before.astimezone(zone).utcoffset()
    while after - before > _SECOND:
        middle = before + ((after - before) // _SECOND // 2) * _SECOND
        if middle.astimezone(zone).utcoffset() == offset_before:
            before = middle
        else:
            after = middle
    return after


def _instant(wall: datetime, zone: tzinfo) -> datetime:
    """Returns the UTC instant a naive wall-clock tick fires at: its first occurrence, or the gap's end."""
    instant = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall:
        return instant
    return _gap_end(wall, zone)


def _cron_forward(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    zone = _zone(schedule.timezone)
    # No wall-clock time before after's own maps to an instant after it, even in the repeated
    # hour's second pass: those times fire in their first pass, already past.
    start = after.astimezone(zone).replace(tzinfo=None)
    previous = None
    for wall in CronSim(schedule.cron, start):
        instant = _instant(wall, zone)
        # Several wall-clock times in a gap are one instant: fire it once
        if instant > after and instant != previous:
            previous = instant
            yield instant


def _cron_backward(schedule: Schedule, until: datetime) -> Iterator[datetime]:
    zone = _zone(schedule.timezone)
    # In the second pass of a repeated hour, the rest of that hour's wall-clock times fired in the
    # first pass, before ``until``: start from the wall clock as the first pass would read it.
    first_pass_offset = until.astimezone(zone).replace(fold=0).utcoffset()
    top = (until.astimezone(UTC) + first_pass_offset).replace(tzinfo=None)
    previous = None
    # CronSim goes strictly before a whole-second start; ticks are whole seconds
    for wall in CronSim(schedule.cron, top.replace(microsecond=0) + _SECOND, reverse=True):
        instant = _instant(wall, zone)
        if instant <= until and instant != previous:
            previous = instant
            yield instant


# Intervals in absolute time


def _interval_forward(every: timedelta, after: datetime) -> Iterator[datetime]:
    multiple = (after - EPOCH) // every + 1
    while True:
        yield EPOCH + multiple * every
        multiple += 1


def _interval_backward(every: timedelta, until: datetime) -> Iterator[datetime]:
    multiple = (until - EPOCH) // every
    while True:
        yield EPOCH + multiple * every
        multiple -= 1


# Ticks


def iter_ticks(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    """Iterates over a schedule's ticks strictly after ``after``, oldest first.

    Parameters:
      schedule: The schedule.
      after: An aware datetime.

    Returns:
      An iterator of aware UTC datetimes, endless in practice (``cronsim`` gives up after 50
      years without a match).

    Raises:
      ValueError: If ``after`` is naive.
    """
    _require_aware(after, "after")
    if schedule.every is not None:
        return _interval_forward(schedule.every, after)
    return _cron_forward(schedule, after)


def next_tick(schedule: Schedule, after: datetime) -> datetime:
    """Returns a schedule's first tick strictly after ``after`` (aware), as an aware UTC datetime.

    Raises:
      ValueError: If ``after`` is naive.
    """
    return next(iter_ticks(schedule, after))


def _ticks_until(schedule: Schedule, until: datetime) -> Iterator[datetime]:
    """Iterates over a schedule's ticks at or before ``until``, newest first."""
    if schedule.every is not None:
        return _interval_backward(schedule.every, until)
    return _cron_backward(schedule, until)


def due_ticks(
    schedule: Schedule,
    last_fired: datetime | None,
    now: datetime,
    *,
    max_ticks: int = DEFAULT_MAX_TICKS,
    grace: timedelta = DEFAULT_GRACE,
) -> list[datetime]:
    """Returns the ticks to fire now, oldest first.

    The ticks in ``(last_fired, now]`` are due; the schedule's ``missed`` policy picks which fire:
    ``"latest"`` the latest of them, ``"all"`` the most recent ``max_ticks`` of them, ``"none"``
    the latest if ``now - tick <= grace``.  A tick is never returned twice for the same
    ``last_fired``, and never one at or before it.

    Parameters:
      schedule: The schedule.
      last_fired: The last tick fired, or ``None`` for a schedule seen for the first time, which
        fires none of its past ticks (see :func:`resume_point`).
      now: The current time, aware.
      max_ticks: The most ticks the ``"all"`` policy fires at once.
      grace: How late a tick may be and still fire under the ``"none"`` policy.

    Returns:
      Aware UTC datetimes, oldest first; empty if nothing is due.

    Raises:
      ValueError: If ``now`` or ``last_fired`` is naive, ``max_ticks`` is below 1 or ``grace`` is
        negative.
    """
    _require_aware(now, "now")
    if max_ticks < 1:
        raise ValueError(f"max_ticks must be at least 1, not {max_ticks}")
    if grace < timedelta(0):
        raise ValueError(f"grace must not be negative, not {grace}")
    if last_fired is None:
        return []
    _require_aware(last_fired, "last_fired")
    newest_first = _ticks_until(schedule, now)
    limit = max_ticks if schedule.missed == "all" else 1
    due = []
    for tick in newest_first:
        if tick <= last_fired or len(due) == limit:
            break
        due.append(tick)
    if schedule.missed == "none":
        due = [tick for tick in due if now - tick <= grace]
    return due[::-1]


def resume_point(last_fired: datetime | None, now: datetime, fired: Sequence[datetime]) -> datetime:
    """Returns what the clock records as a schedule's ``last_fired`` once ``fired`` are sent.

    The last tick fired; if none was, ``last_fired`` unchanged, or ``now`` for a schedule seen for
    the first time, so that its first tick is the first one after it was seen.  The record changes
    only when something fired or the schedule is new.

    Parameters:
      last_fired: What :func:`due_ticks` was given.
      now: What :func:`due_ticks` was given.
      fired: What :func:`due_ticks` returned, once sent.

    Raises:
      ValueError: If ``now`` is naive.
    """
    _require_aware(now, "now")
    if fired:
        return fired[-1]
    return now.astimezone(UTC) if last_fired is None else last_fired


def tick_id(schedule: Schedule, tick: datetime) -> str:
    """Returns the message id of a schedule's tick, the same in every clock process.

    A uuid5 over :data:`TICK_NAMESPACE` and ``"<name>@<tick in UTC, ISO 8601>"``.

    Raises:
      ValueError: If ``tick`` is naive.
    """
    _require_aware(tick, "tick")
    return str(uuid.uuid5(TICK_NAMESPACE, f"{schedule.name}@{tick.astimezone(UTC).isoformat()}"))


# Declaring schedules


class Schedules:
    """The schedules of an application, declared next to its actors.

    ``actor`` is a Dramatiq actor (its ``actor_name`` and ``queue_name`` are used) or an actor
    name.  A name defaults to ``"<actor_name> <timing>"`` (``"send_report 0 3 * * * Europe/Berlin"``,
    ``"poll every 300s"``): it does not depend on the order of declaration, and a changed timing
    is a new schedule, which does not fire the old one's missed ticks.  Give ``name=`` to keep a
    schedule's state across changes of its timing.  Iterating yields the schedules in the order
    they were declared.

    Examples::

      schedules = Schedules()
      schedules.cron("0 3 * * *", send_report, args=("daily",), timezone="Europe/Berlin")
      schedules.every(timedelta(minutes=5), "poll_feeds")

      @schedules.cron("*/10 * * * * *")
      @dramatiq.actor
      def heartbeat(): ...
    """

    def __init__(self) -> None:
        self._by_name: dict[str, Schedule] = {}

    def __iter__(self) -> Iterator[Schedule]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def add(self, schedule: Schedule) -> Schedule:
        """Adds a schedule.

        Raises:
          ValueError: If a schedule of the same name exists.
        """
        if schedule.name in self._by_name:
            raise ValueError(f"duplicate schedule name {schedule.name!r}: give each schedule its own name=")
        self._by_name[schedule.name] = schedule
        return schedule

    def cron(
        self,
        expression: str,
        actor: Any = None,
        *,
        args: tuple = (),
        kwargs: dict[str, Any] | None = None,
        name: str | None = None,
        timezone: str = "UTC",
        missed: str = "latest",
    ) -> Any:
        """Declares a cron schedule; without ``actor``, returns a decorator for the actor.

        Parameters:
          expression: 5 fields, or 6 with a leading seconds field, in ``timezone``'s wall clock.
          actor: A Dramatiq actor or an actor name.
          args, kwargs, name, timezone, missed: See :class:`Schedule`.

        Returns:
          The new :class:`Schedule`, or a decorator that declares it and returns the actor.

        Raises:
          ValueError: See :class:`Schedule`, and :meth:`add`.
        """
        timing = {"cron": expression, "timezone": timezone}
        return self._declare(actor, name, timing, args=args, kwargs=kwargs or {}, missed=missed)

    def every(
        self,
        interval: timedelta,
        actor: Any = None,
        *,
        args: tuple = (),
        kwargs: dict[str, Any] | None = None,
        name: str | None = None,
        missed: str = "latest",
    ) -> Any:
        """Declares an interval schedule; without ``actor``, returns a decorator for the actor.

        Parameters:
          interval: The time between ticks, in absolute time, anchored on the Unix epoch in UTC.
          actor: A Dramatiq actor or an actor name.
          args, kwargs, name, missed: See :class:`Schedule`.

        Returns:
          The new :class:`Schedule`, or a decorator that declares it and returns the actor.

        Raises:
          ValueError: See :class:`Schedule`, and :meth:`add`.
        """
        return self._declare(actor, name, {"every": interval}, args=args, kwargs=kwargs or {}, missed=missed)

    def _declare(self, actor: Any, name: str | None, timing: dict[str, Any], **options: Any) -> Any:
        if actor is None:

            def decorator(actor: Any) -> Any:
                self._declare(actor, name, timing, **options)
                return actor

            return decorator
        if isinstance(actor, str):
            actor_name, queue_name = actor, None
        elif isinstance(getattr(actor, "actor_name", None), str):
            actor_name, queue_name = actor.actor_name, getattr(actor, "queue_name", None)
        else:
            raise TypeError(f"actor must be a Dramatiq actor or an actor name, not {actor!r}")
        schedule = Schedule(name=name or actor_name, actor_name=actor_name, queue_name=queue_name, **timing, **options)
        if name is None:
            schedule = dataclasses.replace(schedule, name=f"{actor_name} {schedule.timing}")
        return self.add(schedule)
