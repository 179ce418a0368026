"""broker.clock on a real Kafka: ticks sent once and on time, missed ticks by policy, a dead leader's
unfinished tick settled, and ``kafka-tasks clock --list``."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from broker import KafkaBroker, reading
from broker.clock import CLOCK_TOPIC, TICK_OPTION, Clock, TickRecord, tick_message
from broker.producer import Record
from broker.schedules import Schedule, tick_id
from tests.eventually import eventually
from tests.system import ROOT

QUEUE = "ticks"


@pytest.fixture
def broker(kafka):
    """A broker on its own topic prefix, with the queue the schedules send to."""
    broker = KafkaBroker(bootstrap_servers=kafka, prefix=f"clock-{uuid.uuid4().hex[:8]}.", partitions=2)
    broker.declare_queue(QUEUE)
    yield broker
    broker.close()


def every(seconds: float, name: str, **options) -> Schedule:
    return Schedule(name=name, actor_name="tick", queue_name=QUEUE, every=dt.timedelta(seconds=seconds), **options)


class Running:
    """A clock running in a thread until :meth:`stop`."""

    def __init__(self, clock: Clock) -> None:
        self.clock, self.stopping = clock, threading.Event()
        self.thread = threading.Thread(target=clock.run, args=(self.stopping,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the clock did not stop"


def sent(broker: KafkaBroker) -> list[dict]:
    """The messages in the queue the schedules send to, with their record timestamps."""
    records, _ = reading.read_to_end(broker, broker.settings.topic(QUEUE))
    return [{**json.loads(record.value()), "sent_ms": record.timestamp()[1]} for record in records]


def ticks_of(messages: list[dict], schedule: Schedule) -> list[dt.datetime]:
    return sorted(
        dt.datetime.fromisoformat(m["options"][TICK_OPTION])
        for m in messages
        if m["options"]["schedule"] == schedule.name
    )


def write_state(broker: KafkaBroker, record: TickRecord) -> None:
    """Writes a clock record as an earlier leader would have."""
    topic = broker.settings.topic(CLOCK_TOPIC)
    Clock(broker, []).ensure_topic()
    broker.producer.send(Record(topic, record.encode(), key=record.schedule.encode(), partition=0))


def test_a_clock_sends_each_tick_once_and_never_early(broker):
    schedule = every(1, "every second", missed="all")
    clock = Running(Clock(broker, [schedule]))
    try:
        # When it has run for a few ticks
        eventually(lambda: len(sent(broker)) >= 3, timeout=30, what="three ticks sent")
    finally:
        clock.stop()
    # Then the ticks are consecutive seconds, each sent once with its own id, none before its time
    messages = sent(broker)
    ticks = ticks_of(messages, schedule)
    assert ticks == [ticks[0] + dt.timedelta(seconds=i) for i in range(len(ticks))]
    assert sorted(m["message_id"] for m in messages) == sorted(tick_id(schedule, t) for t in ticks)
    assert all(
        m["sent_ms"] >= dt.datetime.fromisoformat(m["options"][TICK_OPTION]).timestamp() * 1000 for m in messages
    )
    # And the clock topic says where the schedule stands: the last tick, sent
    assert Clock(broker, [schedule]).read_state()[schedule.name].tick == ticks[-1]


def test_ticks_missed_while_no_clock_ran_fire_as_each_schedule_says(broker):
    # Given three hourly schedules whose last ticks were fired three hours ago, by a clock since gone
    hourly = {policy: every(3600, f"hourly {policy}", missed=policy) for policy in ("all", "latest", "none")}
    now = dt.datetime.now(dt.UTC)
    latest = dt.datetime.fromtimestamp(now.timestamp() // 3600 * 3600, dt.UTC)
    for schedule in hourly.values():
        last = latest - dt.timedelta(hours=3)
        write_state(broker, TickRecord(schedule.name, last, "sent", tick_id(schedule, last), 0))
    # When a clock starts (with no grace for late ticks, so that "none" skips whatever is past)
    clock = Running(Clock(broker, hourly.values(), grace=dt.timedelta(0)))
    try:
        eventually(lambda: len(sent(broker)) >= 4, timeout=30, what="the missed ticks sent")
    finally:
        clock.stop()
    # Then "all" fires the three missed ticks, "latest" the latest of them, and "none" none
    messages = sent(broker)
    assert ticks_of(messages, hourly["all"]) == [latest - dt.timedelta(hours=h) for h in (2, 1, 0)]
    assert ticks_of(messages, hourly["latest"]) == [latest]
    assert ticks_of(messages, hourly["none"]) == []


@pytest.mark.parametrize("was_sent", [True, False])
def test_a_tick_a_dead_leader_left_sending_is_sent_once(broker, was_sent):
    schedule = every(3600, "hourly")
    now = dt.datetime.now(dt.UTC)
    tick = dt.datetime.fromtimestamp(now.timestamp() // 3600 * 3600, dt.UTC)
    message = tick_message(broker, schedule, tick)
    # Given a leader that wrote "sending" for a tick, and died before or after its message left
    write_state(broker, TickRecord(schedule.name, tick, "sending", message.message_id, int(now.timestamp() * 1000)))
    if was_sent:
        broker.enqueue(message)
    # When another clock leads
    clock = Running(Clock(broker, [schedule]))
    try:
        eventually(lambda: Clock(broker, []).read_state()[schedule.name].phase == "sent", what="the tick settled")
    finally:
        clock.stop()
    # Then the tick's message is in the queue exactly once
    assert [m["message_id"] for m in sent(broker)] == [message.message_id]


def test_the_list_shows_each_schedule_with_its_next_and_last_tick(broker, kafka, tmp_path):
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "KAFKA_PREFIX": broker.settings.prefix,
        "TICKS_DB": str(tmp_path / "ticks.db"),
        "TICK_QUEUE": QUEUE,
    }
    schedule = every(1, "every second", missed="all")
    tick = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    write_state(broker, TickRecord(schedule.name, tick, "sent", tick_id(schedule, tick), 0))
    listed = subprocess.run(
        [str(Path(sys.executable).parent / "kafka-tasks"), "clock", "tests.clockapp:setup", "--list"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["SCHEDULE", "WHEN", "NEXT", "TICK", "(UTC)", "LAST", "TICK", "(UTC)"]
    assert row.startswith("every second  every 1s") and row.endswith("2026-01-02T03:04:05+00:00 (sent)"), row
