"""Sampling profiles with py-spy: where the CPU goes while a scenario runs.

:func:`record` samples a running process (and its children) for some seconds, without stopping
it; :func:`summarize` turns py-spy's collapsed stacks into the functions that hold the CPU
("self": the innermost frame) and the packages that are anywhere on the stack ("total").
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from .context import ROOT

#: Samples per second.
RATE = 200

#: Innermost frames that mean a thread is waiting, not computing (py-spy does not always see it).
WAITS = {
    "Condition.wait",
    "Event.wait",
    "Thread.join",
    "Thread._wait_for_tstate_lock",
    "EpollSelector.select",
    "PollSelector.select",
    "Queue.get",
    "sleep",
    "select",
    "poll_batch",
    "DurableProducer._serve_delivery_reports",
    "PollableMethodQueue.defer",
    "_worker",
}

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    """Returns the py-spy executable, if installed."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start(pid: int, seconds: float, output: Path, *, subprocesses: bool = False) -> subprocess.Popen:
    """Starts sampling ``pid`` for ``seconds``; wait on the returned process, then summarize."""
    command = [
        py_spy(),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(RATE),
        "--format",
        "raw",
        "--output",
        str(output),
        "--nonblocking",
    ]
    if subprocesses:
        command.append("--subprocesses")
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def package(file: str) -> str:
    """Names the package a source file belongs to: ``broker (kafka-tasks)``, ``dramatiq``, ``threading``...

    py-spy shortens paths relative to ``sys.path``, so ``dramatiq/broker.py`` is Dramatiq's.
    """
    file = file.split("site-packages/")[-1]
    if file.startswith(str(ROOT) + "/"):
        file = file[len(str(ROOT)) + 1 :]
    first, _, rest = file.lstrip("/").partition("/")
    if first in ("broker", "tasks", "gateway", "benchmarks") and rest:
        return f"{first} (kafka-tasks)"
    if rest and not file.startswith("/"):
        return first
    name = Path(file).name
    return name[:-3] if name.endswith(".py") else (name or "?")


def _frames(stack: str) -> list[tuple[str, str]]:
    frames = []
    for text in stack.split(";"):
        match = _FRAME.match(text)
        if match:
            frames.append((match.group("function"), match.group("file")))
        elif not text.startswith(("process ", "thread ")):
            frames.append((text, ""))
    return frames


def summarize(output: Path, top: int = 12) -> dict:
    """Returns ``{"samples", "self": [(function, package, %)], "total": [(package, %)]}``."""
    own: Counter = Counter()
    anywhere: Counter = Counter()
    samples = 0
    for line in output.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = _frames(stack)
        if not frames:
            continue
        count = int(count)
        samples += count
        function, file = frames[-1]
        if function in WAITS:
            own[("waiting: " + function, package(file))] += count
        else:
            own[(function, package(file))] += count
        for name in {package(file) for _, file in frames}:
            anywhere[name] += count
    if not samples:
        return {"samples": 0, "self": [], "total": []}
    return {
        "samples": samples,
        "self": [(function, pkg, 100 * n / samples) for (function, pkg), n in own.most_common(top)],
        "total": [(pkg, 100 * n / samples) for pkg, n in anywhere.most_common(top)],
    }
