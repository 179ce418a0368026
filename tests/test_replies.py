"""ReplyBook: which results a process waits for, without Kafka."""

from __future__ import annotations

from broker.replies import ReplyBook


def test_a_wanted_result_is_filed_and_can_be_read():
    book = ReplyBook()
    book.want("k", expires_at=2_000)
    assert book.file("k", b"v", expires_at=2_000, now=1_000) is True
    assert book.get("k") == b"v"


def test_a_result_nobody_wants_is_dropped():
    book = ReplyBook()
    assert book.file("other", b"v", expires_at=2_000, now=1_000) is False
    assert book.get("other") is None
    assert len(book) == 0


def test_an_expired_result_is_not_filed():
    book = ReplyBook()
    book.want("k", expires_at=5_000)
    assert book.file("k", b"v", expires_at=999, now=1_000) is False
    assert book.get("k") is None


def test_a_waiter_is_woken_when_its_result_arrives():
    book = ReplyBook()
    woken = []
    assert book.wait("k", woken.append, expires_at=5_000) is None
    book.file("k", b"v", expires_at=5_000, now=1_000)
    assert woken == [b"v"]


def test_waiting_for_a_result_already_there_returns_it_without_registering():
    book = ReplyBook()
    book.want("k", expires_at=5_000)
    book.file("k", b"v", expires_at=5_000, now=1_000)
    woken = []
    assert book.wait("k", woken.append, expires_at=5_000) == b"v"
    book.file("k", b"again", expires_at=5_000, now=1_000)
    assert woken == []


def test_a_cancelled_waiter_is_not_woken():
    book = ReplyBook()
    woken = []
    book.wait("k", woken.append, expires_at=5_000)
    book.cancel("k", woken.append)
    book.file("k", b"v", expires_at=5_000, now=1_000)
    assert woken == []


def test_expire_forgets_old_keys_but_not_those_with_waiters():
    book = ReplyBook()
    book.want("old", expires_at=1_000)
    book.want("fresh", expires_at=9_000)
    book.wait("awaited", lambda value: None, expires_at=1_000)
    assert book.expire(now=2_000) == 1
    assert len(book) == 2


def test_want_extends_but_never_shortens_the_expiry():
    book = ReplyBook()
    book.want("k", expires_at=9_000)
    book.want("k", expires_at=2_000)
    assert book.expire(now=5_000) == 0


def test_a_key_stays_expected_once_it_was_expected():
    book = ReplyBook()
    assert book.want("k", expires_at=5_000, expected=True) is True
    assert book.want("k", expires_at=5_000) is True
    assert book.want("other", expires_at=5_000) is False
