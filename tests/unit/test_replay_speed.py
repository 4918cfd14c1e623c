"""What the fast replay path must keep: the hash of each instance's newest event, the fold of every
instance event type, the garbage collector back on whatever happens, and a SQLite reader that
returns every record once, in order, across partitions, gaps and small batches."""

from __future__ import annotations

import gc
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from eventsvm.events.codec import Codec
from eventsvm.events.model import Event, EventType, event_hash
from eventsvm.log.port import BEGINNING, EventLog, OutRecord, Reader, Record
from eventsvm.projections.readmodel import ALL_TOPICS, ReadModel
from eventsvm.projections.replay import Drain, model_differences, replay
from eventsvm.state.instances import evolve_projection, fold_instance_event, initial_projection
from tests.factories import BASE_MS, _event, event_records, fold_each, instance_chain, sample_event

CODEC = Codec()


def append(log: EventLog, events: list[Event]) -> None:
    log.append(event_records(events))


def forked(rng: random.Random) -> tuple[list[Event], Event]:
    """A spawned instance whose chain forks after spawned (a delete request and a final failure
    share sequence 6), and the newest event of the fork: the larger event id, as the fold breaks ties."""
    chain = instance_chain(rng)
    iid, spawned = chain[0].aggregate_id, chain[-1]
    delete = _event(EventType.INSTANCE_DELETE_REQUESTED, iid, {"host": spawned.body["host"]}, rng, spawned)
    body = dict(sample_event(EventType.INSTANCE_FAILED, rng).body, final=True, host=spawned.body["host"])
    failure = _event(EventType.INSTANCE_FAILED, iid, body, rng, spawned)
    assert delete.sequence == failure.sequence == 6
    return [*chain, delete, failure], max(delete, failure, key=lambda e: e.event_id)


def test_a_replay_keeps_the_hash_of_each_instances_newest_event_whatever_the_topic_order(
    log: EventLog,
) -> None:
    rng = random.Random(7)
    events: list[Event] = []
    winners: dict[str, Event] = {}
    for _ in range(12):
        chain, winner = forked(rng)
        events += chain
        winners[winner.aggregate_id] = winner
    # the replay reads topic after topic (deletes before failures); the live model sees arrival order
    append(log, list(reversed(events)))
    models, _ = replay(log, CODEC)
    assert model_differences(models, fold_each(events)) == []
    for iid, winner in winners.items():
        inst = models.instances.instances[iid]
        assert (inst.last_event_id, inst.last_sequence) == (winner.event_id, 6)
        assert inst.last_hash == event_hash(CODEC.encode(winner))


def test_folding_an_event_answers_with_the_instance_only_while_that_event_is_its_newest() -> None:
    requested, _authenticated, scheduled, _resolved, spawned = instance_chain(random.Random(8))
    projection = initial_projection()
    inst = fold_instance_event(projection, spawned)
    assert inst is not None and inst.last_event_id == spawned.event_id
    assert fold_instance_event(projection, scheduled) is None  # older: folded, but not the newest
    assert fold_instance_event(projection, requested) is None
    assert (inst.status, inst.host, inst.name) == ("ACTIVE", spawned.body["host"], requested.body["name"])
    assert projection.events_folded == 3 and len(inst.actions) == 3
    host = sample_event(EventType.HOST_REGISTERED, random.Random(8))
    assert fold_instance_event(projection, host) is None
    assert projection.events_folded == 3 and len(projection.instances) == 1


@pytest.mark.parametrize("kind", [t for t in EventType if t.startswith("instance.")])
def test_every_instance_event_type_lands_in_the_model_and_its_timeline(kind: EventType) -> None:
    event = sample_event(kind, random.Random(9))
    projection = evolve_projection(initial_projection(), event, b"\xff" * 32)
    inst = projection.get(event.aggregate_id)
    assert inst is not None and projection.events_folded == 1
    assert [a[0] for a in inst.actions] == [kind.value]
    assert type(inst.actions[0][0]) is str  # the plain name, as the API serialises it
    assert inst.last_hash == "f" * 64


class Exploding(Codec):
    """A codec whose decoder breaks the way a bug would (not a CodecError a replay skips)."""

    def decode(self, data: bytes) -> Event:
        raise RuntimeError("decoder bug")

    def projected(self, bodies: Any, unread: Any = ()) -> Callable[[bytes], Event]:
        return self.decode


def test_the_garbage_collector_is_on_again_after_a_replay_or_a_start_that_failed(log: EventLog) -> None:
    append(log, instance_chain(random.Random(10)))
    assert gc.isenabled()
    with pytest.raises(RuntimeError, match="decoder bug"):
        replay(log, Exploding())
    assert gc.isenabled()
    model = ReadModel(log, Exploding())
    with pytest.raises(RuntimeError, match="decoder bug"):
        model.start(tail=False)
    model.close()
    assert gc.isenabled()


class CountingReader(Reader):
    """A real reader, with its polls counted."""

    def __init__(self, inner: Reader) -> None:
        self.inner = inner
        self.polls = 0

    def poll(self, max_records: int = 1000, timeout: float = 0.1) -> list[Record]:
        self.polls += 1
        return self.inner.poll(max_records, timeout)

    def at_end(self) -> bool:
        return self.inner.at_end()

    def close(self) -> None:
        self.inner.close()


def test_a_drain_stops_at_the_end_without_polling_an_empty_log_again(log: EventLog) -> None:
    events = [e for _ in range(4) for e in instance_chain(random.Random(11))]
    append(log, events)
    reader = CountingReader(log.reader([str(t) for t in ALL_TOPICS], BEGINNING))
    try:
        drain = Drain(reader, batch=len(events))
        assert sum(len(batch) for batch in drain) == len(events)
    finally:
        reader.close()
    assert reader.polls == 1 and drain.complete


def read_all(log: EventLog, batch: int) -> list[Record]:
    reader = log.reader([str(t) for t in ALL_TOPICS], BEGINNING)
    try:
        got = [r for records in Drain(reader, batch, stall_s=1.0) for r in records]
        assert reader.at_end()
        return got
    finally:
        reader.close()


def test_a_reader_in_small_batches_returns_every_record_once_in_offset_order(log: EventLog) -> None:
    rng = random.Random(12)
    events = [e for _ in range(9) for e in instance_chain(rng)]
    append(log, events)
    got = read_all(log, batch=4)
    stored = {(r.topic, r.partition, r.offset): r for r in read_all(log, batch=10_000)}
    assert len(got) == len(events) == len(stored)
    assert {(r.topic, r.partition, r.offset) for r in got} == stored.keys()
    for topic, partition in {(r.topic, r.partition) for r in got}:
        offsets = [r.offset for r in got if (r.topic, r.partition) == (topic, partition)]
        assert offsets == sorted(offsets) == list(range(len(offsets)))
    assert sorted(r.value for r in got) == sorted(CODEC.encode(e) for e in events)
    assert all(r.key is not None and CODEC.decode(r.value).aggregate_id == r.key.decode() for r in got)
    assert all(r.timestamp_ms >= BASE_MS for r in got)


def test_a_reader_steps_over_a_record_deleted_behind_the_engines_back(log: EventLog, db: Path) -> None:
    topic = "eventsvm.instance.requested"
    log.append([OutRecord(topic, None, bytes([n]), partition=1) for n in range(6)])
    with sqlite3.connect(db) as conn:
        (topic_id,) = conn.execute("SELECT id FROM topics WHERE name = ?", (topic,)).fetchone()
        conn.execute("DELETE FROM records WHERE topic_id = ? AND part = 1 AND off = 2", (topic_id,))
    got = read_all(log, batch=2)
    assert [(r.offset, r.value) for r in got] == [(n, bytes([n])) for n in (0, 1, 3, 4, 5)]


def test_a_record_is_immutable_and_named_by_its_fields(log: EventLog) -> None:
    log.append([OutRecord("eventsvm.catalog", b"k", b"v", partition=0, timestamp_ms=BASE_MS)])
    (record,) = read_all(log, batch=10)
    assert record == Record("eventsvm.catalog", 0, 0, b"k", b"v", BASE_MS)
    assert (record.topic, record.key, record.value, record.timestamp_ms) == (
        "eventsvm.catalog",
        b"k",
        b"v",
        BASE_MS,
    )
    with pytest.raises(AttributeError):
        record.value = b"changed"  # type: ignore[misc]
    assert not hasattr(record, "__dict__")


def test_a_fork_settles_the_same_way_in_every_read_order() -> None:
    # a delete requested while a retryable failure was being written: both answer event #3
    import itertools

    from eventsvm.events.model import EventType, new_event
    from eventsvm.state.instances import evolve_projection, initial_projection

    iid = "0b6f4b4e-8a49-4f5d-a2c4-3b7e0cf2f0a1"
    base = [
        new_event(
            EventType.INSTANCE_REQUESTED,
            iid,
            {"name": "x", "flavor_id": "1", "image_id": "i"},
            sequence=n,
            project_id="p",
        )
        for n in (1,)
    ]
    retry = new_event(
        EventType.INSTANCE_FAILED,
        iid,
        {"stage": "spawn", "reason": "r", "code": 500, "final": False, "retryable": True, "host": "h"},
        sequence=2,
    )
    delete = new_event(EventType.INSTANCE_DELETE_REQUESTED, iid, {"host": None}, sequence=2)
    seen = set()
    for order in itertools.permutations([*base, retry, delete]):
        state = initial_projection()
        for event in order:
            evolve_projection(state, event)
        inst = state.instances[iid]
        seen.add((inst.status, inst.task_state, inst.last_event_id))
    assert len(seen) == 1, seen
