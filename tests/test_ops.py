"""The ops plane on a real Kafka: worker reports, pause commands, /metrics, /ops security, and
``kafka-tasks status --json``."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import dramatiq
import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from broker import KafkaBroker
from broker.ops.control import Control
from broker.ops.reporter import OpsReporter
from broker.ops.view import OpsView
from broker.ops.web import init_ops
from broker.producer import Record
from tests.eventually import eventually
from tests.system import ROOT

PASSWORD = "correct horse battery"
QUEUE = "ops"


@pytest.fixture
def broker(kafka):
    broker = KafkaBroker(
        bootstrap_servers=kafka, prefix=f"ops-{uuid.uuid4().hex[:8]}.", partitions=2, commit_interval_ms=20
    )
    broker.add_middleware(OpsReporter(interval=0.5))
    yield broker
    broker.close()


@pytest.fixture
def ran():
    return []


@pytest.fixture
def work(broker, ran):
    @dramatiq.actor(queue_name=QUEUE, broker=broker, max_retries=0)
    def work(n, fail=False):
        if fail:
            raise ValueError(f"failing {n}")
        ran.append(n)

    return work


@pytest.fixture
def worker(broker, work):
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=50)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def view(broker, work):
    view = OpsView(broker)
    yield view
    view.close()


def auth(password: str = PASSWORD) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()}


def ops_app(view: OpsView, password: str | None = PASSWORD) -> Flask:
    app = Flask(__name__)
    init_ops(app, lambda: view, password=password)
    return app


def test_a_worker_reports_what_it_did_and_is_gone_once_it_stops(broker, work, worker, view):
    # When a worker runs four messages and one that fails
    for n in range(4):
        work.send(n)
    work.send(4, fail=True)
    broker.join(QUEUE, timeout=30_000, fail_fast=False)

    # Then its report says so, within a report or two
    def counted():
        live, _ = view.workers()
        return live and live[0].counters.get(f"{QUEUE}/work")

    counters = eventually(lambda: (c := counted()) and c.processed == 5 and c, timeout=10, what="5 processed reported")
    assert (counters.errors, counters.rejects) == (1, 1)
    [live] = view.workers()[0]
    assert (live.queues, live.threads, live.pid) == ([QUEUE], 2, os.getpid())
    # When it stops, then it is gone at once (its last report says so)
    worker.stop()
    eventually(lambda: view.workers()[0] == [] and len(view.workers()[1]) == 1, timeout=10, what="the worker gone")


def test_metrics_count_what_the_workers_did_and_what_waits(broker, work, worker, view):
    for n in range(3):
        work.send(n)
    work.send(3, fail=True)
    broker.join(QUEUE, timeout=30_000, fail_fast=False)
    eventually(lambda: (w := view.workers()[0]) and w[0].counters[f"{QUEUE}/work"].processed == 4, what="reported")
    # When Prometheus scrapes /metrics
    answer = ops_app(view).test_client().get("/metrics", headers=auth())
    assert answer.status_code == 200, answer.data
    samples = {}
    for family in text_string_to_metric_families(answer.get_data(as_text=True)):
        for sample in family.samples:
            if sample.labels.get("queue_name") == QUEUE:
                samples[sample.name] = samples.get(sample.name, 0) + sample.value
    # Then the counters are what the test sent, in Dramatiq's names, and nothing waits
    assert samples["dramatiq_messages_total"] == 4
    assert samples["dramatiq_message_errors_total"] == 1
    assert samples["dramatiq_message_rejects_total"] == 1
    assert samples["dramatiq_message_duration_milliseconds_count"] == 4
    assert samples["kafka_tasks_consumer_lag"] == 0
    assert samples["kafka_tasks_dead_letters"] == 1


def test_a_paused_queue_runs_nothing_until_it_is_resumed(broker, work, worker, view, ran):
    # Given the queue paused, and the worker saying it obeys
    view.pause(QUEUE, paused=True, by="test")
    eventually(lambda: (w := view.workers()[0]) and w[0].paused == [QUEUE], timeout=15, what="the worker paused")
    # When messages are sent, and they wait in Kafka, and the worker has seen them waiting
    for n in range(3):
        work.send(n)
    eventually(lambda: view.queue(QUEUE).waiting == 3, timeout=10, what="3 messages waiting")
    eventually(
        lambda: (w := view.workers()[0]) and sum(w[0].lag.get(QUEUE, {}).values()) == 3,
        timeout=15,
        what="the worker reporting 3 behind",
    )
    # Then none ran
    assert ran == []
    # When it is resumed, then they all run
    view.pause(QUEUE, paused=False, by="test")
    broker.join(QUEUE, timeout=30_000)
    assert sorted(ran) == [0, 1, 2]


def test_the_ops_pages_are_off_without_a_password(view):
    client = ops_app(view, password=None).test_client()
    assert client.get("/ops", headers=auth()).status_code == 404
    assert client.get("/metrics", headers=auth()).status_code == 404


@pytest.mark.parametrize("headers", [{}, auth("wrong password, long enough")])
def test_a_request_without_the_password_is_refused(view, headers):
    answer = ops_app(view).test_client().get("/ops/workers", headers=headers)
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Basic")
    assert answer.get_json()["code"] == 401


@pytest.mark.parametrize(
    "forged",
    [
        {"headers": {"Origin": "https://evil.example"}, "data": {}},
        {"headers": {"Sec-Fetch-Site": "cross-site"}, "data": {}},
        {"headers": {}, "data": {"csrf_token": "made-up"}},
    ],
)
def test_a_cross_site_or_tokenless_post_changes_nothing(broker, view, forged):
    client = ops_app(view).test_client()
    # When a forged form posts a pause, with the browser's credentials
    answer = client.post(f"/ops/queues/{QUEUE}/pause", headers={**auth(), **forged["headers"]}, data=forged["data"])
    # Then it is refused, and no command reached the workers
    assert answer.status_code == 403
    assert Control(broker).read() == {}


def test_the_pages_own_form_pauses_the_queue(broker, view):
    client = ops_app(view).test_client()
    page = client.get(f"/ops/queues/{QUEUE}", headers=auth()).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    answer = client.post(f"/ops/queues/{QUEUE}/pause", headers=auth(), data={"csrf_token": token})
    assert answer.status_code == 303
    assert Control(broker).read()[QUEUE].paused is True


def test_status_json_tells_what_waits_and_what_died(broker, kafka):
    # Given a queue with three messages waiting, no worker, and one dead letter
    queue = f"status_{uuid.uuid4().hex[:6]}"
    broker.declare_queue(queue)
    for n in range(3):
        broker.enqueue(dramatiq.Message(queue_name=queue, actor_name="record_tick", args=(n,), kwargs={}, options={}))
    broker.producer.send(Record(broker.settings.topic(f"{queue}.XQ"), b"dead"))
    # When kafka-tasks status --json looks at the application that declares it
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka, "KAFKA_PREFIX": broker.settings.prefix, "TICK_QUEUE": queue}
    out = subprocess.run(
        [str(Path(sys.executable).parent / "kafka-tasks"), "status", "tests.clockapp:setup", "--json"],
        cwd=ROOT,
        env={**env, "TICKS_DB": "/dev/null"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    # Then it shows them, and no live worker
    [state] = [q for q in status["queues"] if q["queue"] == queue]
    assert (state["waiting"], state["delayed"], state["dead_letters"], state["paused"]) == (3, 0, 1, False)
    assert sum(p["lag"] for p in state["partitions"]) == 3
    assert status["workers"]["live"] == []
