"""Child processes of the benchmarks: start them in a session of their own, read their memory,
and stop them with everything they started."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from .context import ROOT


def start(command: list[str], env: dict, log: Path, *, cwd: Path = ROOT) -> subprocess.Popen:
    """Starts a command in a new session (so ``stop`` reaches its children), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen, timeout: float = 30) -> int:
    """Sends SIGTERM to the process's group (as a platform would), kills it after ``timeout``."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def alive(process: subprocess.Popen) -> bool:
    return process.poll() is None


def rss_mib(pid: int) -> float:
    """Returns a process's resident memory in MiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(*pids: int) -> float:
    """Returns the CPU time (user and system) the processes have used so far, in seconds."""
    ticks = 0
    for pid in pids:
        try:
            # The command name may hold spaces; the fields after it are fixed.
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime and stime
    return ticks / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Returns the pids of a process's children."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    """Returns a process and every process under it, children of children included."""
    found = [pid]
    for child in children(pid):
        found += descendants(child)
    return found


def tail(log: Path, lines: int = 15) -> str:
    """Returns the last lines of a log, for error notes."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Waits until ``predicate()`` is true; returns whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
