"""``/api/tasks``: a task's status, looked up by id in the database (never by scanning Kafka).

A task the gateway sent has no row until its worker records its progress; until then its signed
id alone tells that it is ``queued`` (:mod:`tasks.taskids`).
"""

from __future__ import annotations

from flask_smorest import abort

from tasks.schemas import TaskStatusSchema

from . import errors
from .extension import tasks
from .parsing import Blueprint

blp = Blueprint("tasks", __name__, url_prefix="/api/tasks", description="Task statuses.")

#: The OpenAPI description of the ``Location`` header of an accepted task.
LOCATION_HEADER = {"Location": {"description": "The task's status URL.", "schema": {"type": "string"}}}


@blp.route(
    "/<string:task_id>",
    parameters=[
        {"in": "path", "name": "task_id", "example": "01a21beb-ea51-7492-b780-b18f6c1a96e3.f9s0rD8AhGEun1nX4Xe55L1vcec"}
    ],
)
@blp.response(200, TaskStatusSchema)
@errors.documented(blp, 404, 503)
def get_task(task_id: str):
    """Returns a task's status.

    Its result or error come once it has finished; a task Kafka may have stored, though it did not
    confirm it, is `unknown` until its worker or a request sent again with its key settles it.
    """
    task = tasks.task_status(task_id)
    if task is None:
        abort(404, message=f"No task {task_id}.")
    return task
