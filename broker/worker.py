"""``kafka-tasks worker``: Dramatiq worker processes that shut down cleanly on one SIGTERM.

Heroku-like platforms send SIGTERM to *every* process of a dyno and SIGKILL 30 s later.  The stock
``dramatiq`` command forwards the signal to its worker processes, so they get it twice and take
the second as "stop now".  Here every process treats any number of SIGTERMs (or SIGINTs) as one
request to stop: fetching stops, workers finish the messages they hold for up to
``SHUTDOWN_GRACE`` seconds, finished offsets are committed, and anything unfinished is simply not
committed, so Kafka delivers it again.  A process that still has not exited by ``HARD_DEADLINE``
exits anyway, which also loses nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import dramatiq

from .cli import load_broker

#: How long worker threads get to finish the messages they are running, after SIGTERM (s).
SHUTDOWN_GRACE = 15

#: When a stopping process exits whatever it is doing, after SIGTERM (s); under Heroku's 30 s.
HARD_DEADLINE = 23

#: Dramatiq's CLI log format, so both read the same in a log drain.
LOG_FORMAT = "[%(asctime)s] [PID %(process)d] [%(threadName)s] [%(name)s] [%(levelname)s] %(message)s"

logger = logging.getLogger("kafka_tasks.worker")


def _on_stop_signals(callback) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: callback())


def run_process(module: str, queues: list[str] | None, threads: int) -> int:
    """Runs one worker process until it is asked to stop.

    Parameters:
      module: ``MODULE[:ATTRIBUTE]``: the module that declares the actors, and the broker or the
        function that sets it up (see :func:`broker.cli.load_broker`).
      queues: The queues to consume (all declared ones by default).
      threads: The number of worker threads.

    Returns:
      The process exit status.
    """
    stop = threading.Event()
    _on_stop_signals(stop.set)
    broker = load_broker(module)
    worker = dramatiq.Worker(broker, queues=set(queues) if queues else None, worker_threads=threads)
    worker.start()
    logger.info("Worker process is ready for action.")
    while not stop.wait(0.5):
        pass
    logger.info("Stopping: finishing the messages in hand, then committing.")
    watchdog = threading.Timer(HARD_DEADLINE, _exit_now)
    watchdog.daemon = True
    watchdog.start()
    worker.stop(timeout=SHUTDOWN_GRACE * 1000)
    broker.close()
    logger.info("Worker process stopped.")
    return 0


def _exit_now() -> None:
    logger.warning("Shutdown took longer than %ds; exiting. Unfinished messages will be redelivered.", HARD_DEADLINE)
    logging.shutdown()
    os._exit(1)


def serve(module: str, queues: list[str] | None, processes: int, threads: int, verbose: bool = False) -> int:
    """Runs ``processes`` worker processes and supervises them.

    Any worker process that exits on its own stops the others, and the command exits with a
    non-zero status, so the platform restarts the whole set (as Dramatiq's CLI does).

    Returns:
      The exit status: 0 after a requested stop.
    """
    stopping = threading.Event()
    _on_stop_signals(stopping.set)
    command = [sys.executable, "-m", "broker.worker", module, "--threads", str(threads)]
    if queues:
        command += ["--queues", *queues]
    if verbose:
        command.append("--verbose")
    logger.info("kafka-tasks worker is booting up %d process(es) with %d thread(s) each.", processes, threads)
    children = [subprocess.Popen(command) for _ in range(processes)]
    status = 0
    while not stopping.is_set():
        exited = [child for child in children if child.poll() is not None]
        if exited:
            logger.error("Worker process %d exited with status %s; stopping.", exited[0].pid, exited[0].returncode)
            status = 1
            break
        stopping.wait(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)  # Harmless if the platform already sent it.
    deadline = time.monotonic() + HARD_DEADLINE + 1
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    logger.info("kafka-tasks worker stopped.")
    return status


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:  # The entry point of one worker process.
    parser = argparse.ArgumentParser(prog="python -m broker.worker")
    parser.add_argument("module")
    parser.add_argument("--queues", nargs="*")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    return run_process(args.module, args.queues, args.threads)


if __name__ == "__main__":
    sys.exit(main())
