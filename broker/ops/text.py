"""``kafka-tasks status`` in a terminal: the snapshot of :meth:`broker.ops.view.OpsView.snapshot` as
tables.  Pure: the snapshot is handed in."""

from __future__ import annotations


def table(rows: list[tuple], *, numeric: set[int] = frozenset()) -> list[str]:
    """Lines of a table whose first row is its header; columns in ``numeric`` are right-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return [
        "  ".join(
            cell.rjust(widths[i]) if i in numeric and n else cell.ljust(widths[i]) for i, cell in enumerate(row)
        ).rstrip()
        for n, row in enumerate(cells)
    ]


def render(snapshot: dict) -> str:
    """The status as text: the queues, then the live workers, then how many are gone."""
    queues = [("QUEUE", "WAITING", "DELAYED", "DEAD", "WORKERS", "STATE")]
    live = snapshot["workers"]["live"]
    for queue in snapshot["queues"]:
        workers = sum(queue["queue"] in worker["queues"] for worker in live)
        state = "paused" if queue["paused"] else "running"
        queues.append((queue["queue"], queue["waiting"], queue["delayed"], queue["dead_letters"], workers, state))
    lines = [f"kafka-tasks status at {snapshot['at']}", "", *table(queues, numeric={1, 2, 3, 4}), ""]
    if live:
        workers = [("WORKER", "QUEUES", "BUSY", "PROCESSED", "FAILED", "RUNNING NOW", "REPORTED")]
        for worker in live:
            running = ", ".join(f"{m['actor']} ({m['for_s']:.0f} s)" for m in worker["running"]) or "-"
            workers.append(
                (
                    worker["worker"],
                    ",".join(worker["queues"]),
                    f"{worker['busy']}/{worker['threads']}",
                    worker["processed"],
                    worker["failed"],
                    running,
                    f"{worker['last_report_s_ago']:.0f} s ago",
                )
            )
        lines += table(workers, numeric={2, 3, 4})
    else:
        lines.append("No worker process reports.")
    gone = snapshot["workers"]["gone"]
    lines.append(f"{len(live)} live, {len(gone)} gone (no report for {snapshot['gone_after_s']:.0f} s, or stopped).")
    return "\n".join(lines)
