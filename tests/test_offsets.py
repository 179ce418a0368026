"""Tests for broker.offsets: committing only the contiguous finished prefix of each partition."""

import random
import threading

import pytest

from broker.offsets import ContiguousOffsets, OffsetTracker

P0 = ("orders", 0)
P1 = ("orders", 1)
P2 = ("orders", 2)


def offsets_with(*added: int) -> ContiguousOffsets:
    offsets = ContiguousOffsets()
    for offset in added:
        offsets.add(offset)
    return offsets


# ContiguousOffsets


def test_nothing_is_committable_before_any_finish():
    offsets = offsets_with(0, 1, 2)
    assert offsets.committable is None


def test_in_order_finishes_advance_committable_one_past_each():
    offsets = offsets_with(0, 1, 2)
    seen = []
    for offset in (0, 1, 2):
        offsets.finish(offset)
        seen.append(offsets.committable)
    assert seen == [1, 2, 3]


def test_committable_starts_one_past_the_first_added_offset_not_at_zero():
    # Given a partition whose first handed-out offset is 500
    offsets = offsets_with(500, 501)
    # When it finishes
    offsets.finish(500)
    # Then the position is 501, not anything derived from 0
    assert offsets.committable == 501


def test_out_of_order_finishes_commit_only_the_contiguous_prefix():
    # Given offsets 0..9 handed out
    offsets = offsets_with(*range(10))
    # When later offsets finish before 0
    for offset in (3, 7, 6, 9, 4):
        offsets.finish(offset)
    # Then nothing is committable: 0 is still running
    assert offsets.committable is None

    # When 0, 1, 2 finish, 0..4 are done and 5 is not
    for offset in (0, 1, 2):
        offsets.finish(offset)
    assert offsets.committable == 5

    # When 5 finishes, 6 and 7 were already done but 8 is not
    offsets.finish(5)
    assert offsets.committable == 8

    # When 8 finishes, 9 was already done: everything is
    offsets.finish(8)
    assert offsets.committable == 10


def test_early_finish_does_not_move_committable_past_an_unfinished_elder():
    offsets = offsets_with(0, 1, 2)
    offsets.finish(0)
    offsets.finish(2)
    assert offsets.committable == 1


def test_gaps_between_offsets_are_not_unfinished_messages():
    # Given offsets with gaps (compaction, transaction markers)
    offsets = offsets_with(10, 12, 15)
    # When all of them finish
    for offset in (15, 10, 12):
        offsets.finish(offset)
    # Then the position is one past the last one
    assert offsets.committable == 16


def test_gap_after_finished_prefix_commits_one_past_last_finished():
    offsets = offsets_with(10, 12, 15)
    offsets.finish(10)
    offsets.finish(12)
    assert offsets.committable == 13


def test_add_lower_than_previous_raises_value_error():
    offsets = offsets_with(5)
    with pytest.raises(ValueError):
        offsets.add(4)


def test_add_same_offset_twice_raises_value_error():
    offsets = offsets_with(5)
    with pytest.raises(ValueError):
        offsets.add(5)


def test_add_below_committed_position_raises_value_error_when_nothing_pending():
    # Given every added offset finished, so nothing is pending any more
    offsets = offsets_with(5, 6)
    offsets.finish(5)
    offsets.finish(6)
    # When an offset below the committable position is added
    # Then it is rejected even though the pending queue is empty
    with pytest.raises(ValueError):
        offsets.add(6)


def test_add_after_fully_finished_prefix_continues_tracking():
    offsets = offsets_with(5)
    offsets.finish(5)
    offsets.add(9)
    assert offsets.committable == 6
    offsets.finish(9)
    assert offsets.committable == 10


def test_finish_on_empty_tracker_raises_key_error():
    with pytest.raises(KeyError):
        ContiguousOffsets().finish(0)


def test_finish_above_every_added_offset_raises_key_error():
    offsets = offsets_with(0, 1)
    with pytest.raises(KeyError):
        offsets.finish(2)


def test_finish_below_every_added_offset_raises_key_error():
    offsets = offsets_with(5, 6)
    with pytest.raises(KeyError):
        offsets.finish(4)


def test_finish_of_offset_inside_a_gap_raises_key_error():
    # Given offsets 10 and 12 handed out, 11 never was
    offsets = offsets_with(10, 12)
    # When 11 is finished, Then it is rejected as never added
    with pytest.raises(KeyError):
        offsets.finish(11)


def test_finish_twice_while_pending_raises_key_error():
    # Given 1 finished but held back by 0
    offsets = offsets_with(0, 1)
    offsets.finish(1)
    with pytest.raises(KeyError):
        offsets.finish(1)


def test_finish_twice_after_committed_raises_key_error():
    # Given 0 finished and already part of the committable prefix
    offsets = offsets_with(0, 1)
    offsets.finish(0)
    with pytest.raises(KeyError):
        offsets.finish(0)


def test_rejected_finish_leaves_committable_unchanged():
    offsets = offsets_with(0, 1)
    offsets.finish(0)
    with pytest.raises(KeyError):
        offsets.finish(0)
    assert offsets.committable == 1
    assert offsets.in_flight == 1


def test_in_flight_counts_added_but_unfinished_offsets():
    offsets = offsets_with(0, 1, 2, 3)
    assert offsets.in_flight == 4
    offsets.finish(2)
    assert offsets.in_flight == 3
    offsets.finish(0)
    assert offsets.in_flight == 2
    offsets.finish(1)
    offsets.finish(3)
    assert offsets.in_flight == 0


def test_in_flight_is_zero_when_empty():
    assert ContiguousOffsets().in_flight == 0


def expected_committable(added: list[int], finished: set[int]) -> int | None:
    """1 + the largest added offset k such that every added offset <= k is finished, or None."""
    result = None
    for offset in added:
        if offset not in finished:
            break
        result = offset + 1
    return result


def test_random_finish_order_always_commits_exactly_the_finished_prefix():
    rng = random.Random(20240611)
    for _ in range(20):
        # Given 200 offsets, possibly with gaps, finished in a shuffled order
        added = []
        offset = rng.randrange(1000)
        for _ in range(200):
            added.append(offset)
            offset += rng.choice((1, 1, 1, 2, 5))
        offsets = offsets_with(*added)
        order = added[:]
        rng.shuffle(order)
        finished: set[int] = set()
        for done in order:
            offsets.finish(done)
            finished.add(done)
            # Then after every finish the position is one past the contiguous finished prefix
            assert offsets.committable == expected_committable(added, finished)
            assert offsets.in_flight == len(added) - len(finished)
        assert offsets.committable == added[-1] + 1


# OffsetTracker


def test_each_assign_gets_a_new_epoch():
    tracker = OffsetTracker()
    epochs = [tracker.assign(P0), tracker.assign(P1), tracker.assign(P0)]
    assert len(set(epochs)) == 3


def test_add_returns_the_partition_epoch():
    tracker = OffsetTracker()
    epoch = tracker.assign(P0)
    assert tracker.add(P0, 0) == epoch


def test_add_to_unassigned_partition_returns_none():
    tracker = OffsetTracker()
    tracker.assign(P0)
    assert tracker.add(P1, 0) is None
    assert tracker.in_flight == 0


def test_add_to_revoked_partition_returns_none():
    tracker = OffsetTracker()
    tracker.assign(P0)
    tracker.revoke(P0)
    assert tracker.add(P0, 0) is None


def test_finish_with_current_epoch_returns_true_and_moves_position():
    tracker = OffsetTracker()
    epoch = tracker.assign(P0)
    tracker.add(P0, 7)
    assert tracker.finish(P0, 7, epoch) is True
    assert tracker.positions() == {P0: 8}


def test_finish_after_revoke_returns_false_and_moves_nothing():
    # Given a message handed out, then its partition revoked
    tracker = OffsetTracker()
    epoch = tracker.assign(P0)
    tracker.add(P0, 0)
    tracker.revoke(P0)
    # When the worker finishes it late
    # Then it is ignored
    assert tracker.finish(P0, 0, epoch) is False
    assert tracker.positions() == {}
    assert tracker.to_commit() == {}


def test_finish_after_reassign_with_old_epoch_is_ignored():
    # Given offset 0 handed out under the first assignment
    tracker = OffsetTracker()
    old = tracker.assign(P0)
    tracker.add(P0, 0)
    # When the partition is revoked and reassigned, and 0 is delivered again
    tracker.revoke(P0)
    new = tracker.assign(P0)
    tracker.add(P0, 0)
    # Then the stale finish is ignored and 0 stays in flight under the new epoch
    assert tracker.finish(P0, 0, old) is False
    assert tracker.positions() == {}
    assert tracker.in_flight == 1
    # And the new epoch's finish counts
    assert tracker.finish(P0, 0, new) is True
    assert tracker.positions() == {P0: 1}


def test_reassign_without_revoke_also_invalidates_old_epoch():
    tracker = OffsetTracker()
    old = tracker.assign(P0)
    tracker.add(P0, 0)
    tracker.assign(P0)
    assert tracker.finish(P0, 0, old) is False


def test_finish_with_other_partitions_epoch_is_ignored():
    tracker = OffsetTracker()
    tracker.assign(P0)
    epoch1 = tracker.assign(P1)
    tracker.add(P0, 0)
    assert tracker.finish(P0, 0, epoch1) is False
    assert tracker.positions() == {}


def test_finish_twice_returns_false_the_second_time():
    tracker = OffsetTracker()
    epoch = tracker.assign(P0)
    tracker.add(P0, 0)
    tracker.add(P0, 1)
    assert tracker.finish(P0, 1, epoch) is True
    assert tracker.finish(P0, 1, epoch) is False
    assert tracker.in_flight == 1


def test_finish_of_never_added_offset_returns_false():
    tracker = OffsetTracker()
    epoch = tracker.assign(P0)
    tracker.add(P0, 0)
    assert tracker.finish(P0, 5, epoch) is False


def test_positions_omit_partitions_with_nothing_finished():
    tracker = OffsetTracker()
    e0 = tracker.assign(P0)
    tracker.assign(P1)
    tracker.add(P0, 0)
    tracker.add(P1, 0)
    tracker.finish(P0, 0, e0)
    assert tracker.positions() == {P0: 1}


def test_positions_restricted_to_given_partitions():
    tracker = OffsetTracker()
    for partition in (P0, P1, P2):
        epoch = tracker.assign(partition)
        tracker.add(partition, 3)
        tracker.finish(partition, 3, epoch)
    assert tracker.positions([P0, P2]) == {P0: 4, P2: 4}


def test_positions_ignore_requested_partitions_not_owned():
    tracker = OffsetTracker()
    epoch = tracker.assign(P0)
    tracker.add(P0, 0)
    tracker.finish(P0, 0, epoch)
    assert tracker.positions([P0, ("other", 9)]) == {P0: 1}


def test_positions_include_already_committed_partitions():
    # Given a position marked committed
    tracker = OffsetTracker()
    epoch = tracker.assign(P0)
    tracker.add(P0, 0)
    tracker.finish(P0, 0, epoch)
    tracker.mark_committed({P0: 1})
    # Then to_commit drops it but positions still reports it (e.g. for a final commit on revoke)
    assert tracker.to_commit() == {}
    assert tracker.positions([P0]) == {P0: 1}


def test_to_commit_returns_only_positions_that_moved():
    tracker = OffsetTracker()
    e0 = tracker.assign(P0)
    e1 = tracker.assign(P1)
    for partition, epoch in ((P0, e0), (P1, e1)):
        tracker.add(partition, 0)
        tracker.add(partition, 1)
        tracker.finish(partition, 0, epoch)
    tracker.mark_committed({P0: 1, P1: 1})
    # When only P1 progresses
    tracker.finish(P1, 1, e1)
    # Then only P1 is to commit
    assert tracker.to_commit() == {P1: 2}


def tracker_with_finished(*offsets: int) -> OffsetTracker:
    """A tracker owning P0, with ``offsets`` handed out and finished."""
    tracker = OffsetTracker()
    epoch = tracker.assign(P0)
    for offset in offsets:
        tracker.add(P0, offset)
        tracker.finish(P0, offset, epoch)
    return tracker


def test_to_commit_is_empty_after_mark_committed():
    tracker = tracker_with_finished(0)
    assert tracker.to_commit() == {P0: 1}
    tracker.mark_committed(tracker.to_commit())
    assert tracker.to_commit() == {}


def test_to_commit_returns_again_after_further_progress():
    tracker = OffsetTracker()
    epoch = tracker.assign(P0)
    tracker.add(P0, 0)
    tracker.add(P0, 1)
    tracker.finish(P0, 0, epoch)
    tracker.mark_committed(tracker.to_commit())
    tracker.finish(P0, 1, epoch)
    assert tracker.to_commit() == {P0: 2}


def test_mark_committed_with_older_position_does_not_resurrect_to_commit():
    # Given position 2 committed, then an older commit result for 1 arriving late
    tracker = tracker_with_finished(0, 1)
    tracker.mark_committed({P0: 2})
    tracker.mark_committed({P0: 1})
    # Then 2 still counts as committed
    assert tracker.to_commit() == {}


def test_mark_committed_ignores_unowned_partitions():
    tracker = OffsetTracker()
    tracker.mark_committed({P0: 5})
    epoch = tracker.assign(P0)
    tracker.add(P0, 4)
    tracker.finish(P0, 4, epoch)
    assert tracker.to_commit() == {P0: 5}


def test_reassign_forgets_committed_mark():
    # Given a position committed under the first assignment
    tracker = OffsetTracker()
    epoch = tracker.assign(P0)
    tracker.add(P0, 0)
    tracker.finish(P0, 0, epoch)
    tracker.mark_committed({P0: 1})
    # When the partition is revoked and reassigned and reaches the same position
    tracker.revoke(P0)
    epoch = tracker.assign(P0)
    tracker.add(P0, 0)
    tracker.finish(P0, 0, epoch)
    # Then it is to commit again
    assert tracker.to_commit() == {P0: 1}


def test_in_flight_sums_partitions():
    tracker = OffsetTracker()
    e0 = tracker.assign(P0)
    tracker.assign(P1)
    for offset in range(3):
        tracker.add(P0, offset)
    for offset in range(2):
        tracker.add(P1, offset)
    tracker.finish(P0, 1, e0)
    assert tracker.in_flight == 4


def test_in_flight_drops_revoked_partitions():
    tracker = OffsetTracker()
    tracker.assign(P0)
    tracker.assign(P1)
    tracker.add(P0, 0)
    tracker.add(P1, 0)
    tracker.revoke(P0)
    assert tracker.in_flight == 1


def test_concurrent_finishes_from_many_threads_commit_everything():
    # Given N offsets of one partition, split into 8 disjoint shuffled shares
    n, threads = 8_000, 8
    tracker = OffsetTracker()
    epoch = tracker.assign(P0)
    for offset in range(n):
        tracker.add(P0, offset)
    order = list(range(n))
    random.Random(7).shuffle(order)
    shares = [order[i::threads] for i in range(threads)]
    start = threading.Barrier(threads)
    results: list[list[bool]] = [[] for _ in range(threads)]

    def work(index: int) -> None:
        start.wait()
        results[index] = [tracker.finish(P0, offset, epoch) for offset in shares[index]]

    # When 8 threads finish them concurrently
    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    # Then every finish counted and the whole partition is committable
    assert not any(worker.is_alive() for worker in workers)
    assert all(all(result) and len(result) == n // threads for result in results)
    assert tracker.positions() == {P0: n}
    assert tracker.in_flight == 0


def test_a_position_whose_commit_failed_is_to_commit_again():
    tracker = tracker_with_finished(0)
    tracker.mark_committed({P0: 1})
    # When Kafka reports that commit failed
    tracker.commit_failed({P0: 1})
    # Then it is to commit again, though the partition did not move
    assert tracker.to_commit() == {P0: 1}


def test_a_failed_commit_of_an_older_position_forgets_nothing_newer():
    tracker = tracker_with_finished(0, 1)
    tracker.mark_committed({P0: 2})
    # When the failure of an earlier commit (of position 1) arrives late
    tracker.commit_failed({P0: 1})
    # Then the newer committed position stands
    assert tracker.to_commit() == {}
