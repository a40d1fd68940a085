"""What every durable store backend does, through the ``QueueStore`` protocol alone.

Each test runs against every backend in ``conftest.BACKENDS``.  A "restart" is ``close()``
and a new store on the same database: what the router sees after it was stopped.
"""

from __future__ import annotations

import threading

import pytest

from switchboard.store import FSYNC_POLICIES, QueueRecord, StoredMessage, StoreError

T0 = 1_800_000_000.0
"""A wall-clock time for the tests' ``now`` arguments."""

MiB = 1 << 20


def message(message_id: int, size: int = 100, expires_at: float | None = None,
            delivery_count: int = 0) -> StoredMessage:
    payload = bytes([message_id % 251]) * size
    return StoredMessage(message_id, payload, expires_at, delivery_count)


def enqueue(completions, store, name: str, *messages: StoredMessage, now: float = T0) -> None:
    """Enqueue ``messages`` without waiting in between, then wait for every ``done``."""
    pendings = []
    for m in messages:
        pending = completions.pending()
        store.enqueue(name, m, now, pending)
        pendings.append(pending)
    for pending in pendings:
        assert completions.wait(pending) is None


def fetch_all(completions, store, name: str) -> list[StoredMessage]:
    return completions.call(store.fetch, name, 0, 1_000_000, 1 << 40)


def ids(messages: list[StoredMessage]) -> list[int]:
    return [m.message_id for m in messages]


def restart(store_factory, completions, store, fsync: str = "batch"):
    store.close()
    return store_factory(completions.post, fsync)


@pytest.fixture(params=FSYNC_POLICIES)
def fsync(request) -> str:
    return request.param


# -- enqueue and durability -------------------------------------------------------------------


def test_a_new_store_holds_nothing(store_factory, completions):
    store, recovered = store_factory(completions.post)
    assert recovered.queues == []
    assert completions.call(store.queue, "nothing") is None
    assert completions.call(store.fetch, "nothing", 0, 10, MiB) == []


def test_an_enqueued_message_is_there_after_a_restart(store_factory, completions, fsync):
    store, _ = store_factory(completions.post, fsync)
    sent = StoredMessage(1, b"\x00payload\xff" * 50, T0 + 3600.5, 2)
    enqueue(completions, store, "q", sent)

    store, recovered = restart(store_factory, completions, store, fsync)
    [record] = recovered.queues
    assert record.name == "q"
    assert record.messages == 1
    assert record.bytes == len(sent.payload)
    assert record.next_message_id == 2
    assert fetch_all(completions, store, "q") == [sent]


def test_done_runs_on_the_thread_that_runs_what_was_posted(store_factory, completions, fsync):
    """The store never calls back on its own threads: it hands the call to ``post``."""
    store, _ = store_factory(completions.post, fsync)
    pending = completions.pending()
    store.enqueue("q", message(1), T0, pending)
    assert completions.wait(pending) is None
    assert pending.thread == threading.get_ident()
    assert pending.calls == 1


def test_many_enqueues_are_all_acknowledged_and_kept(store_factory, completions, fsync):
    store, _ = store_factory(completions.post, fsync)
    enqueue(completions, store, "q", *(message(i, 64) for i in range(1, 301)))
    store, recovered = restart(store_factory, completions, store, fsync)
    assert ids(fetch_all(completions, store, "q")) == list(range(1, 301))
    assert recovered.queues[0].messages == 300
    assert recovered.queues[0].bytes == 300 * 64


def test_enqueue_creates_the_queue(store_factory, completions):
    store, _ = store_factory(completions.post)
    enqueue(completions, store, "fresh", message(5), now=T0 + 7)
    record = completions.call(store.queue, "fresh")
    assert record.created_at == T0 + 7
    assert record.next_message_id == 6


def test_an_id_already_in_the_queue_is_refused_and_the_store_goes_on(store_factory, completions):
    store, _ = store_factory(completions.post)
    enqueue(completions, store, "q", message(1, 10))
    duplicate = completions.pending()
    after = completions.pending()
    store.enqueue("q", message(1, 20), T0, duplicate)
    store.enqueue("q", message(2, 30), T0, after)
    assert isinstance(completions.wait(duplicate), StoreError)
    assert completions.wait(after) is None
    assert [len(m.payload) for m in fetch_all(completions, store, "q")] == [10, 30]
    record = completions.call(store.queue, "q")
    assert (record.messages, record.bytes) == (2, 40)


def test_enqueue_without_a_callback_is_kept(store_factory, completions):
    store, _ = store_factory(completions.post)
    store.enqueue("q", message(1), T0, None)
    assert ids(fetch_all(completions, store, "q")) == [1]


# -- fetch ------------------------------------------------------------------------------------


def test_fetch_returns_messages_in_id_order_above_after_id(store_factory, completions):
    store, _ = store_factory(completions.post)
    enqueue(completions, store, "q", *(message(i) for i in (3, 1, 7, 5)))
    enqueue(completions, store, "other", message(4))
    assert ids(completions.call(store.fetch, "q", 0, 100, MiB)) == [1, 3, 5, 7]
    assert ids(completions.call(store.fetch, "q", 3, 100, MiB)) == [5, 7]
    assert ids(completions.call(store.fetch, "q", 7, 100, MiB)) == []


def test_fetch_stops_at_max_count(store_factory, completions):
    store, _ = store_factory(completions.post)
    enqueue(completions, store, "q", *(message(i) for i in range(1, 11)))
    assert ids(completions.call(store.fetch, "q", 0, 3, MiB)) == [1, 2, 3]
    assert ids(completions.call(store.fetch, "q", 3, 3, MiB)) == [4, 5, 6]


def test_fetch_stops_before_max_bytes(store_factory, completions):
    store, _ = store_factory(completions.post)
    enqueue(completions, store, "q", *(message(i, 100) for i in range(1, 11)))
    assert ids(completions.call(store.fetch, "q", 0, 100, 300)) == [1, 2, 3]
    assert ids(completions.call(store.fetch, "q", 0, 100, 399)) == [1, 2, 3]
    assert ids(completions.call(store.fetch, "q", 0, 100, 400)) == [1, 2, 3, 4]


def test_fetch_returns_one_message_larger_than_max_bytes(store_factory, completions):
    store, _ = store_factory(completions.post)
    enqueue(completions, store, "q", message(1, 5000), message(2, 10))
    assert ids(completions.call(store.fetch, "q", 0, 100, 1000)) == [1]
    assert ids(completions.call(store.fetch, "q", 0, 100, 0)) == [1]


def test_fetch_of_an_unknown_queue_is_empty(store_factory, completions):
    store, _ = store_factory(completions.post)
    assert completions.call(store.fetch, "nobody", 0, 10, MiB) == []


# -- remove, delivery count -------------------------------------------------------------------


def test_a_removed_message_is_gone_also_after_a_restart(store_factory, completions, fsync):
    store, _ = store_factory(completions.post, fsync)
    enqueue(completions, store, "q", message(1, 10), message(2, 20), message(3, 30))
    store.remove("q", 2)
    assert ids(fetch_all(completions, store, "q")) == [1, 3]
    record = completions.call(store.queue, "q")
    assert (record.messages, record.bytes) == (2, 40)

    store, recovered = restart(store_factory, completions, store, fsync)
    assert ids(fetch_all(completions, store, "q")) == [1, 3]
    assert (recovered.queues[0].messages, recovered.queues[0].bytes) == (2, 40)


def test_removing_what_is_not_there_changes_nothing(store_factory, completions):
    store, _ = store_factory(completions.post)
    enqueue(completions, store, "q", message(1, 10))
    store.remove("q", 9)
    store.remove("q", 1)
    store.remove("q", 1)
    store.remove("nobody", 1)
    record = completions.call(store.queue, "q")
    assert (record.messages, record.bytes) == (0, 0)
    assert completions.call(store.queue, "nobody") is None


def test_a_remove_right_after_the_enqueue_is_applied_after_it(store_factory, completions, fsync):
    """No waiting in between: the calls are applied in the order they were made."""
    store, _ = store_factory(completions.post, fsync)
    pending = completions.pending()
    store.enqueue("q", message(1), T0, pending)
    store.remove("q", 1)
    store.enqueue("q", message(2), T0, None)
    assert ids(fetch_all(completions, store, "q")) == [2]
    assert pending.result is None

    store, _ = restart(store_factory, completions, store, fsync)
    assert ids(fetch_all(completions, store, "q")) == [2]


def test_the_delivery_count_survives_a_restart(store_factory, completions):
    store, _ = store_factory(completions.post)
    enqueue(completions, store, "q", message(1), message(2))
    store.set_delivery_count("q", 2, 3)
    store.set_delivery_count("q", 9, 1)  # not there: nothing happens
    assert [m.delivery_count for m in fetch_all(completions, store, "q")] == [0, 3]

    store, _ = restart(store_factory, completions, store)
    assert [m.delivery_count for m in fetch_all(completions, store, "q")] == [0, 3]


# -- move (dead-letter) -----------------------------------------------------------------------


def test_move_takes_the_message_out_and_appends_it_to_the_other_queue(store_factory, completions):
    store, _ = store_factory(completions.post)
    enqueue(completions, store, "q", message(1, 10), message(2, 20, T0 + 60, 4))
    enqueue(completions, store, "dead", message(1, 5))
    store.move("q", 2, "dead", 2, T0 + 5)
    assert ids(fetch_all(completions, store, "q")) == [1]
    moved = fetch_all(completions, store, "dead")[-1]
    assert moved == StoredMessage(2, message(2, 20).payload, T0 + 60, 4)

    store, recovered = restart(store_factory, completions, store)
    records = {r.name: r for r in recovered.queues}
    assert (records["q"].messages, records["q"].bytes) == (1, 10)
    assert (records["dead"].messages, records["dead"].bytes) == (2, 25)
    assert records["dead"].next_message_id == 3
    assert records["q"].next_message_id == 3
    assert fetch_all(completions, store, "dead")[-1] == moved


def test_move_creates_the_dead_letter_queue(store_factory, completions):
    store, _ = store_factory(completions.post)
    enqueue(completions, store, "q", message(1, 10))
    store.move("q", 1, "dead", 1, T0 + 9)
    record = completions.call(store.queue, "dead")
    assert (record.messages, record.bytes, record.next_message_id) == (1, 10, 2)
    assert record.oldest_at == T0 + 9


def test_move_of_a_message_that_is_gone_does_nothing(store_factory, completions):
    store, _ = store_factory(completions.post)
    enqueue(completions, store, "q", message(1))
    store.remove("q", 1)
    store.move("q", 1, "dead", 1, T0)
    store.move("nobody", 1, "dead", 2, T0)
    assert fetch_all(completions, store, "dead") == []
    assert completions.call(store.queue, "q").messages == 0


# -- expiry -----------------------------------------------------------------------------------


def test_expire_deletes_what_has_expired_and_counts_it_per_queue(store_factory, completions):
    store, _ = store_factory(completions.post)
    enqueue(completions, store, "a",
            message(1, 10, T0 + 10), message(2, 10, None), message(3, 10, T0 + 30), message(4, 10, T0 + 5))
    enqueue(completions, store, "b", message(1, 10, T0 + 1), message(2, 10, T0 + 100))
    enqueue(completions, store, "c", message(1, 10, None))

    assert completions.call(store.expire, T0 + 20) == {"a": 2, "b": 1}
    assert ids(fetch_all(completions, store, "a")) == [2, 3]
    assert ids(fetch_all(completions, store, "b")) == [2]
    assert ids(fetch_all(completions, store, "c")) == [1]
    assert completions.call(store.queue, "a").bytes == 20
    assert completions.call(store.expire, T0 + 20) == {}

    store, recovered = restart(store_factory, completions, store)
    assert {r.name: r.messages for r in recovered.queues} == {"a": 2, "b": 1, "c": 1}


def test_a_message_expires_only_once_its_time_has_passed(store_factory, completions):
    store, _ = store_factory(completions.post)
    enqueue(completions, store, "q", message(1, 10, T0 + 10))
    assert completions.call(store.expire, T0 + 10) == {}
    assert completions.call(store.expire, T0 + 10.001) == {"q": 1}


# -- purge and delete -------------------------------------------------------------------------


def test_purge_empties_the_queue_and_keeps_it(store_factory, completions):
    store, _ = store_factory(completions.post)
    enqueue(completions, store, "q", *(message(i) for i in range(1, 6)))
    enqueue(completions, store, "other", message(1))
    assert completions.call(store.purge_queue, "q") is None
    record = completions.call(store.queue, "q")
    assert (record.messages, record.bytes, record.oldest_at, record.next_message_id) == (0, 0, None, 6)
    assert ids(fetch_all(completions, store, "other")) == [1]

    store, recovered = restart(store_factory, completions, store)
    assert {r.name: r.messages for r in recovered.queues} == {"q": 0, "other": 1}
    assert fetch_all(completions, store, "q") == []


def test_delete_removes_the_queue_and_its_messages(store_factory, completions):
    store, _ = store_factory(completions.post)
    enqueue(completions, store, "q", message(1), message(2))
    enqueue(completions, store, "other", message(1))
    assert completions.call(store.delete_queue, "q") is None
    assert completions.call(store.queue, "q") is None
    assert fetch_all(completions, store, "q") == []

    store, recovered = restart(store_factory, completions, store)
    assert [r.name for r in recovered.queues] == ["other"]
    assert completions.call(store.delete_queue, "never-was") is None


def test_a_queue_made_again_after_delete_starts_empty(store_factory, completions):
    store, _ = store_factory(completions.post)
    enqueue(completions, store, "q", message(1), message(2), now=T0)
    store.delete_queue("q")
    store.create_queue("q", T0 + 50)
    record = completions.call(store.queue, "q")
    assert (record.messages, record.created_at, record.next_message_id) == (0, T0 + 50, 1)


def test_purge_and_delete_are_applied_in_order_with_enqueues(store_factory, completions, fsync):
    store, _ = store_factory(completions.post, fsync)
    store.enqueue("q", message(1), T0, None)
    store.purge_queue("q")
    store.enqueue("q", message(2), T0, None)
    store.enqueue("gone", message(1), T0, None)
    store.delete_queue("gone")
    store.enqueue("gone", message(7), T0, None)
    assert ids(fetch_all(completions, store, "q")) == [2]
    assert ids(fetch_all(completions, store, "gone")) == [7]


# -- queue records ----------------------------------------------------------------------------


def test_create_queue_makes_an_empty_queue_once(store_factory, completions):
    store, _ = store_factory(completions.post)
    store.create_queue("q", T0)
    store.create_queue("q", T0 + 100)
    assert completions.call(store.queue, "q") == QueueRecord(
        name="q", messages=0, bytes=0, created_at=T0, last_active_at=T0, oldest_at=None,
        next_message_id=1)


def test_the_record_counts_messages_bytes_and_the_oldest(store_factory, completions):
    store, _ = store_factory(completions.post)
    store.create_queue("q", T0)
    enqueue(completions, store, "q", message(1, 100), now=T0 + 1)
    enqueue(completions, store, "q", message(2, 50), message(3, 25), now=T0 + 2)
    record = completions.call(store.queue, "q")
    assert (record.messages, record.bytes) == (3, 175)
    assert record.oldest_at == T0 + 1
    assert record.created_at == T0
    assert record.last_active_at == T0 + 2
    assert record.next_message_id == 4

    store.remove("q", 1)
    record = completions.call(store.queue, "q")
    assert (record.messages, record.bytes, record.oldest_at) == (2, 75, T0 + 2)


def test_touch_records_activity(store_factory, completions):
    store, _ = store_factory(completions.post)
    store.create_queue("q", T0)
    store.touch_queue("q", T0 + 30)
    store.touch_queue("nobody", T0 + 30)
    assert completions.call(store.queue, "q").last_active_at == T0 + 30
    assert completions.call(store.queue, "nobody") is None

    store, recovered = restart(store_factory, completions, store)
    assert recovered.queues[0].last_active_at == T0 + 30


def test_open_reports_every_queue(store_factory, completions):
    store, _ = store_factory(completions.post)
    for n, name in enumerate(["a", "b/c", "queue/ünïcode"]):
        store.create_queue(name, T0 + n)
        enqueue(completions, store, name, *(message(i, 10) for i in range(1, n + 2)), now=T0 + n)
    store, recovered = restart(store_factory, completions, store)
    records = sorted(recovered.queues, key=lambda r: r.name)
    assert [(r.name, r.messages, r.bytes, r.created_at, r.oldest_at, r.next_message_id) for r in records] == [
        ("a", 1, 10, T0, T0, 2),
        ("b/c", 2, 20, T0 + 1, T0 + 1, 3),
        ("queue/ünïcode", 3, 30, T0 + 2, T0 + 2, 4),
    ]


def test_message_ids_are_not_reused_after_everything_was_removed(store_factory, completions, fsync):
    """``next_message_id`` outlives the messages, and a restart."""
    store, _ = store_factory(completions.post, fsync)
    enqueue(completions, store, "q", *(message(i) for i in range(1, 41)))
    for i in range(1, 41):
        store.remove("q", i)
    record = completions.call(store.queue, "q")
    assert (record.messages, record.bytes, record.oldest_at, record.next_message_id) == (0, 0, None, 41)

    store, recovered = restart(store_factory, completions, store, fsync)
    [record] = recovered.queues
    assert (record.messages, record.bytes, record.oldest_at, record.next_message_id) == (0, 0, None, 41)
    assert completions.call(store.queue, "q").next_message_id == 41


def test_the_lease_on_a_store_only_one_router_uses_is_always_granted(store_factory, completions):
    store, _ = store_factory(completions.post)
    if store.shared:
        pytest.skip("a shared store's leases are tested with several holders")
    assert completions.call(store.try_lease, "q", "router-a", T0, 10.0) == "router-a"
    assert completions.call(store.try_lease, "q", "router-b", T0, 10.0) == "router-b"


def test_close_commits_what_was_queued(store_factory, completions, fsync):
    """Operations made just before ``close`` are applied, in order, before it returns."""
    store, _ = store_factory(completions.post, fsync)
    for i in range(1, 201):
        store.enqueue("q", message(i), T0, None)
    for i in range(1, 201, 2):
        store.remove("q", i)
    store.set_delivery_count("q", 2, 5)
    store, recovered = restart(store_factory, completions, store, fsync)
    found = fetch_all(completions, store, "q")
    assert ids(found) == list(range(2, 201, 2))
    assert found[0].delivery_count == 5
    assert recovered.queues[0].next_message_id == 201
