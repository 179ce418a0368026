"""An open-loop HTTP load generator: requests at a fixed rate, whatever the server answers.

A closed-loop client (wrk, a thread per connection) sends its next request when the last one is
answered, so a slow server is offered less load, and its slowest moments are sampled least.  Here
request ``i`` is due at ``start + i / rate``; it goes out on the first free keep-alive connection,
and its latency counts from when it was due, so time spent waiting for a connection counts too.
HTTP/1.1 is spoken over asyncio streams, cheap enough for the thousands of requests per second a
2-core machine's system can take.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Load:
    """What one run of the generator did.

    Parameters:
      due(int): Requests that came due.
      statuses(dict): Answers, by status code (0: the connection failed).
      latencies(list): Milliseconds from each answered request's due time to its answer.
      started(float), ended(float): ``time.time()`` of the first due request and of the last answer.
    """

    due: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0

    def count(self, *statuses: int) -> int:
        return sum(self.statuses.get(status, 0) for status in statuses)


def due_times(rate: float, seconds: float) -> list[float]:
    """The offsets (s) from the start at which requests come due: ``rate`` per second, evenly."""
    return [i / rate for i in range(int(rate * seconds))]


def run(
    port: int, rate: float, seconds: float, request: Callable[[int], tuple[str, bytes]], *, connections: int = 64
) -> Load:
    """Sends ``rate`` requests per second for ``seconds`` to ``127.0.0.1:port``.

    Parameters:
      request: Gives the path and JSON body of request ``i`` (a POST).
      connections: The most requests in flight at once, each on its own keep-alive connection.

    Returns:
      What was sent and answered.
    """
    return asyncio.run(_run(port, rate, seconds, request, connections))


async def _run(port, rate, seconds, request, connections) -> Load:
    load = Load()
    idle: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(None)  # a free slot; its connection is opened on first use
    pending: set[asyncio.Task] = set()
    started = time.perf_counter()
    load.started = time.time()
    for i, offset in enumerate(due_times(rate, seconds)):
        delay = started + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        load.due += 1
        task = asyncio.create_task(_send(port, idle, started + offset, *request(i), load))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)
    load.ended = time.time()
    while not idle.empty():
        connection = idle.get_nowait()
        if connection is not None:
            connection[1].close()
    return load


async def _send(port: int, idle: asyncio.Queue, due: float, path: str, body: bytes, load: Load) -> None:
    connection = await idle.get()
    status = 0
    try:
        if connection is None:
            connection = await asyncio.open_connection("127.0.0.1", port)
        reader, writer = connection
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status, closing = await _response(reader)
        if closing:
            writer.close()
            connection = None
    except (OSError, asyncio.IncompleteReadError, ValueError):
        if connection is not None:
            connection[1].close()
        connection = None
    finally:
        idle.put_nowait(connection)
    load.statuses[status] = load.statuses.get(status, 0) + 1
    if status:
        load.latencies.append((time.perf_counter() - due) * 1000)


async def _response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Reads one response; returns its status and whether the server closes the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection", "").lower() == "close"
