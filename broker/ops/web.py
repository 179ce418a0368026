"""``/ops`` and ``/metrics``: the operations pages and Prometheus metrics, served by a Flask app.

Off unless a password is configured (``OPS_PASSWORD`` in the reference system): then every page
asks for HTTP basic auth (any user name, that password; the platform's TLS carries it), and every
action that changes state (replay, pause, resume) is a POST carrying a CSRF token of this
deployment, refused when it comes from another site.  Pages are rendered on the server and work
without JavaScript; the plots are inline SVG (:mod:`broker.svgplot`), the stylesheet is served by the
app.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import Callable

from flask import Blueprint, Flask, Response, abort, current_app, redirect, render_template, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..svgplot import Series, line_chart
from .metrics import render_metrics
from .report import GONE_AFTER
from .view import OpsView, worker_summary

#: Where the ops parts of an app are kept: ``app.extensions[EXTENSION]``.
EXTENSION = "kafka_tasks_ops"

#: How long a page's CSRF token stays valid (s).
CSRF_MAX_AGE = 12 * 3600


class OpsPages:
    """The ops pages of one app: its view (made at first use, in the serving process) and secrets."""

    def __init__(self, view_factory: Callable[[], OpsView], password: str) -> None:
        self._factory = view_factory
        self._view: OpsView | None = None
        self.password = password
        key = hashlib.sha256(b"kafka-tasks ops\0" + password.encode()).hexdigest()
        self.csrf = URLSafeTimedSerializer(key, salt="kafka-tasks ops csrf")

    @property
    def view(self) -> OpsView:
        if self._view is None:
            self._view = self._factory()
        return self._view


def init_ops(app: Flask, view_factory: Callable[[], OpsView], *, password: str | None) -> bool:
    """Serves ``/ops`` and ``/metrics`` on an app, if a password is given; else nothing (both 404).

    Parameters:
      view_factory: Makes the app's :class:`OpsView`, at the first request that needs it.
      password: The password of HTTP basic auth; ``None`` or empty leaves the pages off.

    Returns:
      Whether the pages are on.
    """
    if not password:
        return False
    app.extensions[EXTENSION] = OpsPages(view_factory, password)
    app.register_blueprint(blueprint)
    return True


blueprint = Blueprint(
    "ops", __name__, template_folder="templates", static_folder="static", static_url_path="/ops/static"
)


def _pages() -> OpsPages:
    return current_app.extensions[EXTENSION]


@blueprint.before_request
def _authenticate():
    pages = _pages()
    auth = request.authorization
    if (
        auth is None
        or auth.type != "basic"
        or not hmac.compare_digest((auth.password or "").encode(), pages.password.encode())
    ):
        body = {"code": 401, "status": "Unauthorized", "message": "The ops pages need the ops password."}
        return Response(
            json.dumps(body),
            401,
            {"WWW-Authenticate": 'Basic realm="kafka-tasks ops", charset="UTF-8"', "Content-Type": "application/json"},
        )
    if request.method == "POST":
        _check_csrf(pages)
    return None


def _check_csrf(pages: OpsPages) -> None:
    """Refuses a POST from another site, or without this deployment's token (basic auth travels with
    any request the browser makes, also a forged one)."""
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if site == "cross-site" or (origin and origin != request.host_url.rstrip("/")):
        abort(403, "A request from another site may not change anything here.")
    try:
        pages.csrf.loads(request.form.get("csrf_token", ""), max_age=CSRF_MAX_AGE)
    except BadSignature:
        abort(403, "The form's CSRF token is missing, wrong or expired: load the page again.")


@blueprint.app_context_processor
def _helpers():
    if EXTENSION not in current_app.extensions:
        return {}
    return {
        "csrf_token": lambda: _pages().csrf.dumps("ops"),
        "ago": _ago,
        "when": _when,
        "now_ms": int(time.time() * 1000),
        "gone_after": GONE_AFTER,
    }


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _when(value) -> str:
    if isinstance(value, (int, float)):
        value = dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _plots(view: OpsView, queue: str, now_ms: int, width: int = 600) -> tuple[str, str]:
    fleet = view.fleet
    throughput = line_chart(
        [Series(queue, fleet.throughput(queue, now_ms))], title=f"{queue}: processed", unit="msg/s", width=width
    )
    lag = line_chart([Series(queue, fleet.lag(queue, now_ms))], title=f"{queue}: waiting", unit="msg", width=width)
    return throughput, lag


@blueprint.get("/ops")
@blueprint.get("/ops/")
def overview():
    view = _pages().view
    now_ms = int(time.time() * 1000)
    live, gone = view.workers(now_ms)
    queues = view.queues()
    plots = {state.name: _plots(view, state.name, now_ms) for state in queues}
    consumers = {state.name: sum(state.name in w.queues for w in live) for state in queues}
    return render_template(
        "ops/overview.html",
        queues=queues,
        plots=plots,
        consumers=consumers,
        live=[worker_summary(w, now_ms) for w in live],
        gone=len(gone),
        failures=view.failures(10),
        schedules=view.schedule_rows(),
    )


@blueprint.get("/ops/queues/<queue>")
def queue_page(queue: str):
    view = _pages().view
    if queue not in view.broker.queues:
        abort(404, f"No queue {queue}.")
    now_ms = int(time.time() * 1000)
    live, _ = view.workers(now_ms)
    return render_template(
        "ops/queue.html",
        state=view.queue(queue),
        plots=_plots(view, queue, now_ms),
        workers=[worker_summary(w, now_ms) for w in live if queue in w.queues],
    )


@blueprint.post("/ops/queues/<queue>/pause")
def pause(queue: str):
    return _command(queue, paused=True)


@blueprint.post("/ops/queues/<queue>/resume")
def resume(queue: str):
    return _command(queue, paused=False)


def _command(queue: str, *, paused: bool):
    view = _pages().view
    if queue not in view.broker.queues:
        abort(404, f"No queue {queue}.")
    view.pause(queue, paused=paused, by=f"ops page ({request.authorization.username or 'ops'})")
    return redirect(url_for("ops.queue_page", queue=queue, done="paused" if paused else "resumed"), 303)


@blueprint.get("/ops/workers")
def workers_page():
    now_ms = int(time.time() * 1000)
    live, gone = _pages().view.workers(now_ms)
    return render_template(
        "ops/workers.html",
        live=[worker_summary(w, now_ms) for w in live],
        gone=[worker_summary(w, now_ms) for w in gone],
    )


@blueprint.get("/ops/queues/<queue>/dead-letters")
def dead_letters(queue: str):
    view = _pages().view
    if queue not in view.broker.queues:
        abort(404, f"No queue {queue}.")
    return render_template("ops/dead_letters.html", queue=queue, letters=view.dead_letters(queue)[::-1])


@blueprint.get("/ops/queues/<queue>/dead-letters/<letter_id>")
def dead_letter(queue: str, letter_id: str):
    view = _pages().view
    if queue not in view.broker.queues:
        abort(404, f"No queue {queue}.")
    found = [letter for letter in view.dead_letters(queue) if letter.id == letter_id]
    if not found:
        abort(404, f"No dead letter {letter_id} in {queue}.")
    letter = found[0]
    try:
        body = json.dumps(json.loads(letter.value), indent=2, ensure_ascii=False)
    except (ValueError, TypeError):
        body = letter.value.decode("utf-8", errors="replace") if isinstance(letter.value, bytes) else str(letter.value)
    return render_template("ops/dead_letter.html", queue=queue, letter=letter, body=body)


@blueprint.post("/ops/queues/<queue>/dead-letters/replay")
def replay(queue: str):
    view = _pages().view
    if queue not in view.broker.queues:
        abort(404, f"No queue {queue}.")
    ids = None if request.form.get("all") else request.form.getlist("id")
    if ids is not None and not ids:
        return redirect(url_for("ops.dead_letters", queue=queue, replayed=0, skipped=0), 303)
    result = view.replay(queue, ids)
    return redirect(
        url_for("ops.dead_letters", queue=queue, replayed=len(result.replayed), skipped=len(result.skipped)), 303
    )


@blueprint.get("/ops/tasks")
def task_page():
    task_id = request.args.get("id", "").strip()
    task = _pages().view.task(task_id) if task_id else None
    return render_template("ops/task.html", task_id=task_id, task=task), (404 if task_id and task is None else 200)


@blueprint.get("/metrics")
def metrics():
    text, content_type = render_metrics(_pages().view)
    return Response(text, 200, {"Content-Type": content_type})
