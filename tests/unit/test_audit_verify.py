"""`eventsvm audit verify`: every gap, reordering and altered event named with where it is."""

from __future__ import annotations

import argparse
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventsvm.app.audit_cli import EXIT_FOUND, add_commands
from eventsvm.events.codec import Codec
from eventsvm.events.model import INSTANCE_TOPICS, Event, EventType
from eventsvm.log.port import EventLog
from eventsvm.projections.audit import ALTERED, GAP, REORDER, load_anchor, save_anchor, verify
from tests.factories import _event, event_records, instance_chain, signed_records, sqlite_log

CODEC = Codec()


@pytest.fixture
def log(db: Path) -> Iterator[EventLog]:
    """The instance topics only, on two partitions."""
    with sqlite_log(db, 2, INSTANCE_TOPICS) as opened:
        yield opened


def append(log: EventLog, events: list[Event]) -> list[tuple[str, int, int]]:
    placed = log.append(event_records(events))
    return [(str(e.topic), p, o) for e, (p, o) in zip(events, placed, strict=True)]


def tamper(db: Path, topic: str, partition: int, offset: int, change: bytes | None = None,
           at: int = -1) -> None:
    """Change one byte of a stored record in the engine's own table (or delete it with change=None)."""
    with sqlite3.connect(db) as conn:
        (topic_id,) = conn.execute("SELECT id FROM topics WHERE name = ?", (topic,)).fetchone()
        where = (topic_id, partition, offset)
        if change is None:
            conn.execute("DELETE FROM records WHERE topic_id = ? AND part = ? AND off = ?", where)
            return
        (value,) = conn.execute("SELECT value FROM records WHERE topic_id = ? AND part = ? AND off = ?",
                                where).fetchone()
        altered = bytearray(value)
        altered[at] = change[0] if altered[at] != change[0] else change[0] ^ 1
        conn.execute("UPDATE records SET value = ? WHERE topic_id = ? AND part = ? AND off = ?",
                     (bytes(altered), *where))


def test_an_untouched_log_is_clean(log: EventLog) -> None:
    rng = random.Random(1)
    for _ in range(10):
        append(log, instance_chain(rng))
    report = verify(log, CODEC)
    assert report.clean, report.findings
    assert (report.events, report.instances, report.links) == (50, 10, 40)
    assert "no problems" in report.summary()


def test_one_altered_byte_is_named_with_its_place(log: EventLog, db: Path) -> None:
    chain = instance_chain(random.Random(2))
    places = append(log, chain)
    topic, partition, offset = places[1]
    name_at = CODEC.encode(chain[1]).index(b"member") + 2  # a byte of a role the request carried
    tamper(db, topic, partition, offset, b"X", at=name_at)
    report = verify(log, CODEC)
    (finding,) = report.findings
    assert (finding.kind, finding.where(), finding.event_id) == (ALTERED, f"{topic}:{partition}:{offset}",
                                                                  chain[1].event_id)
    assert finding.instance == chain[0].aggregate_id
    assert chain[2].event_id in finding.detail  # the event whose recorded hash no longer matches


def test_bytes_that_no_longer_decode_are_named(log: EventLog, db: Path) -> None:
    chain = instance_chain(random.Random(3))
    places = append(log, chain)
    tamper(db, *places[4], b"\x00", at=3)  # inside the schema fingerprint
    report = verify(log, CODEC)
    (finding,) = report.findings
    assert (finding.kind, (finding.topic, finding.partition, finding.offset)) == (ALTERED, places[4])
    assert "no longer decode" in finding.detail


def test_a_deleted_event_is_a_gap_in_the_cause_and_in_the_sequence(log: EventLog, db: Path) -> None:
    chain = instance_chain(random.Random(4))
    places = append(log, chain)
    tamper(db, *places[2], None)
    report = verify(log, CODEC, stall_s=0.5)
    assert {f.kind for f in report.findings} == {GAP}
    details = " / ".join(f.detail for f in report.findings)
    assert "the log counts records it did not return" in details  # the engine still counts it
    assert f"its cause {chain[2].event_id} is not in the log" in details
    assert "sequence 3 of instance" in details
    assert all(f.event_id == chain[3].event_id for f in report.findings if f.topic)


def test_an_event_stored_before_its_cause_is_a_reordering(log: EventLog) -> None:
    rng = random.Random(5)
    requested, authenticated, scheduled, _resolved, _spawned = instance_chain(rng)
    append(log, [requested, authenticated])
    # a second placement answering the first: the same topic and key, so the same partition
    again = _event(EventType.INSTANCE_SCHEDULED, scheduled.aggregate_id, dict(scheduled.body, attempt=2), rng,
                   scheduled)
    places = append(log, [again, scheduled])
    report = verify(log, CODEC)
    (finding,) = report.findings
    assert (finding.kind, (finding.topic, finding.partition, finding.offset)) == (REORDER, places[0])
    assert "stored before its cause" in finding.detail


def test_a_sequence_that_does_not_grow_is_a_reordering(log: EventLog) -> None:
    chain = instance_chain(random.Random(6))
    chain[3].sequence = 2  # what a replayed or forged answer would carry
    append(log, chain)
    kinds = [(f.kind, f.event_id) for f in verify(log, CODEC).findings]
    assert (REORDER, chain[3].event_id) in kinds


def test_the_newest_event_is_covered_by_a_saved_anchor(log: EventLog, db: Path, tmp_path: Path) -> None:
    chain = instance_chain(random.Random(7))
    places = append(log, chain)
    anchor = tmp_path / "anchor.json"
    save_anchor(verify(log, CODEC), anchor)
    assert list(load_anchor(anchor)) == [chain[4].event_id], "the newest event is the one chain head"
    name_at = CODEC.encode(chain[4]).index(b"instance-") + 9
    tamper(db, *places[4], b"f", at=name_at)
    assert verify(log, CODEC).clean, "no later event vouches for the newest one"
    (finding,) = verify(log, CODEC, load_anchor(anchor)).findings
    assert (finding.kind, finding.event_id) == (ALTERED, chain[4].event_id)


def test_the_command_exits_non_zero_naming_the_place(log: EventLog, db: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    chain = instance_chain(random.Random(8))
    data_dir = db.parent / "data"
    placed = log.append(signed_records(data_dir, chain))  # signed as the cloud's writers sign
    places = [(str(e.topic), p, o) for e, (p, o) in zip(chain, placed, strict=True)]
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", "verify", "--log", f"sqlite://{db}", "--data-dir", str(data_dir)])
    assert args.func(args) == 0
    assert "5 events of 1 aggregates, 4 hash links" in capsys.readouterr().out
    tamper(db, *places[0], b"Z", at=-5)
    assert args.func(args) == EXIT_FOUND
    out = capsys.readouterr().out
    # a changed byte of a signed event breaks its writer's signature before anything else
    assert f"FORGED    {places[0][0]}:{places[0][1]}:{places[0][2]} instance {chain[0].aggregate_id}" in out
    assert "the signature of api's key 1 does not match the event's bytes" in out
