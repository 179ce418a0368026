"""The live processes of the tests' subprocesses, read from ``/proc``: children and process groups."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def _stat(pid: int) -> tuple[int, int] | None:
    """Returns ``(ppid, pgid)`` of a live (non-zombie) process, or ``None``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # After "pid (comm) ": state ppid pgrp ...
    return None if fields[0] in ("Z", "X") else (int(fields[1]), int(fields[2]))


def live_pids() -> Iterator[tuple[int, tuple[int, int]]]:
    """Yields ``(pid, (ppid, pgid))`` of every live process."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                yield int(entry), stat


def children_of(pid: int) -> list[int]:
    """The live child processes of ``pid``."""
    return sorted(p for p, (ppid, _) in live_pids() if ppid == pid)


def group_members(pgid: int) -> list[int]:
    """The live processes of the process group ``pgid``."""
    return sorted(p for p, (_, group) in live_pids() if group == pgid)
