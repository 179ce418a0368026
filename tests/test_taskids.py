"""Signed task ids: pure logic, no database."""

import datetime as dt
import uuid

import pytest

from broker.taskids import TaskIds, uuid7

KINDS = ("create_user", "process_payment")
BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
MILLIS = 1_795_000_000_123  # 2026-11-18 11:06:40.123 UTC


@pytest.fixture
def ids():
    return TaskIds("a key of this deployment")


def test_uuid7_carries_its_time_and_version():
    made = uuid7(MILLIS, bytes(range(10)))
    assert made.version == 7
    assert made.variant == uuid.RFC_4122
    assert made.int >> 80 == MILLIS


def test_uuid7s_sort_by_time():
    earlier, later = uuid7(MILLIS, b"\xff" * 10), uuid7(MILLIS + 1, bytes(10))
    assert str(earlier) < str(later)


def test_a_task_id_fits_the_stores_column(ids):
    assert len(ids.new("process_payment")) <= 64


def test_a_new_task_id_tells_its_kind_and_time(ids):
    task_id = ids.new("process_payment", millis=MILLIS)

    issued = ids.issued(task_id, KINDS)

    assert issued.kind == "process_payment"
    assert issued.created_at == dt.datetime(2026, 11, 18, 11, 6, 40, 123_000, tzinfo=dt.UTC)


def test_new_task_ids_differ_within_one_millisecond(ids):
    assert ids.new("create_user", millis=MILLIS) != ids.new("create_user", millis=MILLIS)


def test_an_id_signed_with_another_key_is_not_ours(ids):
    task_id = TaskIds("another key").new("create_user")

    assert ids.issued(task_id, KINDS) is None


def test_an_id_signed_for_a_kind_not_asked_about_is_not_ours(ids):
    task_id = ids.new("create_user")

    assert ids.issued(task_id, ["process_payment"]) is None


@pytest.mark.parametrize(
    "alter",
    [
        lambda task_id: task_id[:-5] + ("A" if task_id[-5] != "A" else "B") + task_id[-4:],  # the signature
        # base64's spare bits: the same signature bytes, spelled otherwise
        lambda task_id: task_id[:-1] + BASE64URL[BASE64URL.index(task_id[-1]) ^ 1],
        lambda task_id: ("1" if task_id[0] != "1" else "2") + task_id[1:],  # the time
        lambda task_id: task_id.upper(),  # the same UUID, written otherwise
        lambda task_id: task_id.rpartition(".")[0],  # no signature
    ],
    ids=["signature", "signature-spelling", "time", "case", "unsigned"],
)
def test_an_altered_id_is_not_ours(ids, alter):
    task_id = ids.new("create_user")

    assert ids.issued(alter(task_id), KINDS) is None


@pytest.mark.parametrize("task_id", [str(uuid.uuid4()), "no-such-task", "", ".", "x.y", "\ud800.sig", "é.sig"])
def test_ids_we_did_not_make_are_not_ours(ids, task_id):
    assert ids.issued(task_id, KINDS) is None


def test_an_id_of_another_uuid_version_with_a_valid_signature_is_not_ours(ids):
    # Signed by this key, but over a UUIDv4: we never make those, and it tells no time
    signer = ids._signer("create_user")
    task_id = signer.sign(str(uuid.uuid4())).decode()

    assert signer.validate(task_id)
    assert ids.issued(task_id, KINDS) is None
