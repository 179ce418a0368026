"""Group commit, with a commit function that records its batches (no database)."""

import ctypes
import queue
import threading

import pytest

from broker.groupcommit import CommitInterrupted, GroupCommit


class Recorder:
    """A commit function that records batches; the first batch can be held until released."""

    def __init__(self, hold_first=False, bad=(), interrupting=()):
        self.batches = []
        self.committed = set()
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.bad = set(bad)
        self.interrupting = set(interrupting)
        self.running = 0
        self.overlapped = False

    def __call__(self, items):
        self.running += 1
        self.overlapped |= self.running > 1
        try:
            self.entered.set()
            self.release.wait(10)
            if self.interrupting & set(items):
                raise KeyboardInterrupt
            if self.bad & set(items):
                raise ValueError(f"bad item in {sorted(items)}")
            self.batches.append(list(items))
            self.committed.update(items)
        finally:
            self.running -= 1


def submit_in_thread(group, item, outcomes):
    """Commits ``item`` in a new thread, recording whether it was committed when the call
    returned, or what it raised (an interrupt too).
    """

    def run():
        try:
            group(item)
            outcomes[item] = "committed" if item in group._commit.committed else "returned early"
        except BaseException as e:
            outcomes[item] = e

    thread = threading.Thread(target=run, daemon=True)  # a stranded caller must not hang pytest
    thread.start()
    return thread


def wait_until_pending(group, count):
    for _ in range(1000):
        with group._lock:
            if len(group._queue) >= count + 1:  # and the leader
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
    others = []
    for queued, item in enumerate(waiting, 1):
        others.append(submit_in_thread(group, item, outcomes))
        wait_until_pending(group, queued)
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


def test_each_caller_gets_back_the_result_of_its_own_item():
    recorder = Recorder(hold_first=True)
    results = {}

    def commit(items):
        recorder(items)
        return [f"result of {item}" for item in items]

    group = GroupCommit(commit)
    threads = [threading.Thread(target=lambda i=i: results.update({i: group(i)})) for i in ("a", "b", "c")]
    threads[0].start()
    assert recorder.entered.wait(5)
    for queued, thread in enumerate(threads[1:], 1):
        thread.start()
        wait_until_pending(group, queued)
    recorder.release.set()
    for thread in threads:
        thread.join(10)

    assert len(recorder.batches) == 2  # b and c shared a batch, and each got its own result
    assert results == {item: f"result of {item}" for item in ("a", "b", "c")}


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


def test_an_interrupted_leader_wakes_the_writes_it_was_committing():
    # Given a batch whose leader is interrupted (as Dramatiq's time limits interrupt a thread)
    recorder = Recorder(hold_first=True, interrupting={"b"})

    outcomes = commit_while_others_wait(recorder, ("b", "c"))

    # Then its leader sees the interruption, and the other caller learns its write's fate is unknown
    assert isinstance(outcomes["b"], KeyboardInterrupt)
    assert isinstance(outcomes["c"], CommitInterrupted)


def test_a_caller_interrupted_while_waiting_to_lead_hands_the_lead_on():
    # Given a commit in progress, and two writes waiting behind it
    recorder = Recorder(hold_first=True)
    group = GroupCommit(recorder)
    outcomes = {}
    first = submit_in_thread(group, "first", outcomes)
    assert recorder.entered.wait(5)
    interrupted = submit_in_thread(group, "b", outcomes)
    wait_until_pending(group, 1)
    last = submit_in_thread(group, "c", outcomes)
    wait_until_pending(group, 2)

    # When the first of them, next to lead, is interrupted while it waits
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(interrupted.ident), ctypes.py_object(KeyboardInterrupt))
    recorder.release.set()
    for thread in (first, interrupted, last):
        thread.join(10)

    # Then the other still gets its write committed
    assert isinstance(outcomes["b"], KeyboardInterrupt)
    assert outcomes["c"] == "committed"
    assert "b" not in recorder.committed


class SteppedCommit:
    """A commit function whose every call waits until the test lets it through."""

    def __init__(self):
        self.calls = queue.Queue()
        self.go = threading.Semaphore(0)
        self.committed = set()

    def __call__(self, items):
        self.calls.put(list(items))
        assert self.go.acquire(timeout=10)
        self.committed.update(items)


def test_a_caller_leaving_a_batch_in_commit_strands_no_write_behind_it():
    # Given a batch of two being committed, and a caller of that batch leaving it (what an
    # interruption landing between queueing and waiting makes its thread do)
    commit = SteppedCommit()
    group = GroupCommit(commit)
    outcomes = {}
    first = submit_in_thread(group, "first", outcomes)
    assert commit.calls.get(timeout=5) == ["first"]
    threads = [first, submit_in_thread(group, "b", outcomes)]
    wait_until_pending(group, 1)
    threads.append(submit_in_thread(group, "c", outcomes))
    wait_until_pending(group, 2)
    commit.go.release()
    assert commit.calls.get(timeout=5) == ["b", "c"]
    with group._lock:
        leaving = next(write for write in group._queue if write.item == "c")
    group._leave(leaving)

    # When another write queues behind that batch, and the batch is committed
    threads.append(submit_in_thread(group, "d", outcomes))
    wait_until_pending(group, 1)
    commit.go.release()

    # Then that write is led and committed, not left waiting
    assert commit.calls.get(timeout=5) == ["d"]
    commit.go.release()
    for thread in threads:
        thread.join(10)
    assert outcomes["d"] == "committed"
