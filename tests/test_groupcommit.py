"""Group commit, with a commit function that records its batches (no database)."""

import threading

import pytest

from tasks.groupcommit import GroupCommit


class Recorder:
    """A commit function that records batches; the first batch can be held until released."""

    def __init__(self, hold_first=False, bad=()):
        self.batches = []
        self.committed = set()
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.bad = set(bad)
        self.running = 0
        self.overlapped = False

    def __call__(self, items):
        self.running += 1
        self.overlapped |= self.running > 1
        try:
            self.entered.set()
            self.release.wait(10)
            if self.bad & set(items):
                raise ValueError(f"bad item in {sorted(items)}")
            self.batches.append(list(items))
            self.committed.update(items)
        finally:
            self.running -= 1


def submit_in_thread(group, item, outcomes):
    def run():
        try:
            group(item)
            outcomes[item] = "committed" if item in recorder_of(group).committed else "returned early"
        except Exception as e:
            outcomes[item] = e

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def recorder_of(group):
    return group._commit


def wait_until_pending(group, count):
    for _ in range(1000):
        with group._pending_lock:
            if len(group._pending) >= count:
                return
        threading.Event().wait(0.005)
    raise AssertionError(f"{count} writes never queued")


def test_a_lone_write_is_committed_on_its_own():
    recorder = Recorder()
    GroupCommit(recorder)("a")

    assert recorder.batches == [["a"]]


def commit_while_others_wait(recorder, waiting):
    """Holds a first write's commit until ``waiting`` writes queue behind it; returns each
    caller's outcome.
    """
    group = GroupCommit(recorder)
    outcomes = {}
    first = submit_in_thread(group, "first", outcomes)
    assert recorder.entered.wait(5)
    others = [submit_in_thread(group, item, outcomes) for item in waiting]
    wait_until_pending(group, len(waiting))
    recorder.release.set()
    for thread in (first, *others):
        thread.join(10)
    return outcomes


def test_writes_that_arrive_during_a_commit_share_the_next_one():
    recorder = Recorder(hold_first=True)

    outcomes = commit_while_others_wait(recorder, ("b", "c", "d"))

    # The three that waited are committed together, in one batch after the first
    assert recorder.batches[0] == ["first"]
    assert sorted(recorder.batches[1]) == ["b", "c", "d"]
    assert len(recorder.batches) == 2
    # And each caller returned only once its own write was committed
    assert outcomes == {item: "committed" for item in ("first", "b", "c", "d")}


def test_a_failed_batch_fails_only_the_bad_write():
    recorder = Recorder(hold_first=True, bad={"bad"})

    outcomes = commit_while_others_wait(recorder, ("b", "bad", "c"))

    # Each write of the failed batch is committed alone: only the bad write's caller gets the error
    assert sorted(recorder.committed) == ["b", "c", "first"]
    assert {item: outcomes[item] for item in ("first", "b", "c")} == dict.fromkeys(("first", "b", "c"), "committed")
    assert isinstance(outcomes["bad"], ValueError)
    assert "bad" in str(outcomes["bad"])


def test_a_lone_write_that_fails_raises_to_its_caller():
    group = GroupCommit(Recorder(bad={"bad"}))

    with pytest.raises(ValueError):
        group("bad")


def test_commits_never_overlap():
    recorder = Recorder()
    group = GroupCommit(recorder)
    outcomes = {}

    threads = [submit_in_thread(group, i, outcomes) for i in range(200)]
    for thread in threads:
        thread.join(10)

    assert not recorder.overlapped
    assert recorder.committed == set(range(200))
    assert set(outcomes.values()) == {"committed"}
