"""Verified seals (eventsvm.projections.seal): a replay reads what an auditor verified without the
Ed25519 verify, and still refuses anything altered, added or removed since, or not vouched for."""

from __future__ import annotations

import argparse
import random
import sqlite3
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventsvm.app.audit_cli import add_commands
from eventsvm.app.writers import key_dir, trusting_codec, writer_codec, writer_ring
from eventsvm.config import LogConfig
from eventsvm.events.codec import Codec, Forged
from eventsvm.events.model import Event, EventType, new_event
from eventsvm.events.signing import KeyRing, key_ring
from eventsvm.log.port import EventLog, OutRecord, Record
from eventsvm.projections.audit import verify
from eventsvm.projections.readmodel import ALL_TOPICS, Models, ReadModel
from eventsvm.projections.replay import Drain, ReplayReport, model_differences, replay
from eventsvm.projections.seal import SealBroken, Sealing, SealStore, UntrustedSeal
from tests.factories import instance_chain, signed_records, sqlite_log

CODEC = Codec()


def chains(count: int, seed: int = 1) -> list[Event]:
    rng = random.Random(seed)
    return [e for _ in range(count) for e in instance_chain(rng)]


def store_of(db: Path, data_dir: Path) -> SealStore:
    return SealStore(data_dir, key_dir(data_dir), LogConfig(url=f"sqlite://{db}").identity)


def admin_grant() -> Event:
    return new_event(EventType.ROLE_ASSIGNED, "u-demo:p-admin",
                     {"user_id": "u-demo", "project_id": "p-admin", "role": "admin"})


def signed_and_sealed(log: EventLog, db: Path, tmp_path: Path,
                      events: list[Event]) -> tuple[Codec, SealStore]:
    """`events` signed by their writers (keys under tmp_path/data) in `log`, sealed by an audit."""
    data_dir = tmp_path / "data"
    log.append(signed_records(data_dir, events))
    codec = trusting_codec(data_dir)
    store = store_of(db, data_dir)
    seal_by_audit(log, codec, store)
    return codec, store


def seal_by_audit(log: EventLog, codec: Codec, store: SealStore) -> Sealing:
    sealing = Sealing()
    report = verify(log, codec, sealing=sealing)
    assert report.complete
    store.save(sealing)
    return sealing


def sealed_replay(log: EventLog, codec: Codec, store: SealStore) -> tuple[Models, ReplayReport]:
    sealing = Sealing(store.load(log))
    return replay(log, codec, sealing=sealing)


def alter_stored(db: Path, topic: str, offset: int, old: bytes, new: bytes) -> tuple[int, int]:
    """Rewrite one stored record's bytes in the database file, as someone with the file could;
    returns (partition, offset) of the record altered: the first of `topic` at or past `offset`
    that holds `old`."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT part, off, value FROM records JOIN topics ON topics.id = topic_id "
                            "WHERE name = ? AND off >= ? ORDER BY off, part", (topic, offset)).fetchall()
        part, off, value = next(r for r in rows if old in r[2])
        conn.execute("UPDATE records SET value = ? WHERE part = ? AND off = ? AND topic_id = "
                     "(SELECT id FROM topics WHERE name = ?)", (value.replace(old, new, 1), part, off, topic))
    return part, off


def test_a_sealed_replay_skips_every_verify_and_rebuilds_the_same_models(
        log: EventLog, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "data"
    events = chains(30)
    log.append(signed_records(data_dir, events))
    codec = trusting_codec(data_dir)
    verified, full = replay(log, codec)
    store = store_of(db, data_dir)
    seal_by_audit(log, codec, store)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE((key_dir(data_dir) / "seal").stat().st_mode) == 0o700
    assert "seal" not in writer_ring(data_dir).writers(), "the seal key never signs an event"

    calls = []
    real = KeyRing.writer_of
    monkeypatch.setattr(KeyRing, "writer_of", lambda self, data: calls.append(1) or real(self, data))
    models, report = sealed_replay(log, trusting_codec(data_dir), store)  # a fresh ring: nothing cached
    assert report.sealed == report.records_read == len(events)
    assert calls == [1], "only the seal's own signature is verified"
    assert report.undecodable == 0 and report.events == full.events
    assert model_differences(models, verified) == []


def test_a_record_altered_inside_the_sealed_range_breaks_the_seal(log: EventLog, db: Path,
                                                                  tmp_path: Path) -> None:
    events = chains(10)
    codec, store = signed_and_sealed(log, db, tmp_path, events)
    name = events[0].body["name"].encode()
    part, offset = alter_stored(db, "eventsvm.instance.requested", 0, name, name[:-1] + b"X")

    with pytest.raises(SealBroken, match=f"eventsvm.instance.requested:{part} offsets 0-") as broken:
        sealed_replay(log, codec, store)
    assert broken.value.where == ("eventsvm.instance.requested", part)
    # without the seal the signature names the alteration, and the record is never folded
    with pytest.raises(Forged, match="does not match"):
        codec.decode(next(r.value for r in _records(log, "eventsvm.instance.requested")
                          if r.partition == part and r.offset == offset))
    _, report = replay(log, codec)
    assert report.undecodable == 1


def _records(log: EventLog, topic: str) -> list[Record]:
    reader = log.reader([topic])
    try:
        return [r for batch in Drain(reader) for r in batch]
    finally:
        reader.close()


def test_the_replay_command_reports_a_broken_seal_and_replays_verifying_everything(
        log: EventLog, db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "data"
    events = chains(6)
    log.append(signed_records(data_dir, events))
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    where = ["--log", f"sqlite://{db}", "--data-dir", str(data_dir)]
    audit = parser.parse_args(["audit", "verify", *where])
    assert audit.func(audit) == 0
    assert f"sealed {len(events)} records" in capsys.readouterr().out
    again = parser.parse_args(["replay", *where])
    assert again.func(again) == 0
    out = capsys.readouterr().out
    assert f"{len(events)} of {len(events)} records under a verified seal" in out
    assert "the others verified" not in out, "there are no others"

    name = events[5].body["name"].encode()
    alter_stored(db, "eventsvm.instance.requested", 0, name, name[:-1] + b"X")
    assert again.func(again) == 1
    out, err = capsys.readouterr()
    assert "SEAL BROKEN: eventsvm.instance.requested:" in err and "replaying again" in err
    assert "1 undecodable records skipped" in out and "under a verified seal" not in out
    assert again.func(again) == 1, "the broken seal stays until an audit seals the log as it is"
    assert audit.func(audit) == 1  # the audit names the forgery, and seals around it
    capsys.readouterr()
    assert again.func(again) == 0
    assert "1 undecodable records skipped" in capsys.readouterr().out, "the forgery is still refused"


def test_events_after_the_seal_are_verified_one_by_one(log: EventLog, db: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = chains(8)
    codec, store = signed_and_sealed(log, db, tmp_path, first)
    later = chains(4, seed=2)
    grant = admin_grant()
    stranger = writer_codec(tmp_path / "elsewhere", "api", CODEC)  # the right name, an unknown key
    log.append([*signed_records(data_dir, later),
                OutRecord("eventsvm.identity", grant.aggregate_id.encode(), stranger.encode(grant))])

    sealing = Sealing(store.load(log))
    models, report = replay(log, codec, sealing=sealing)
    assert report.sealed == len(first)
    assert report.undecodable == 1, "the forged grant after the seal is refused"
    assert report.events == len(first) + len(later)
    # the next seal covers all of it, and leaves the forgery to be verified (and refused) every time
    store.save(sealing)
    models2, again = replay(log, codec, sealing=Sealing(store.load(log)))
    assert again.sealed == len(first) + len(later) and again.undecodable == 1
    assert model_differences(models2, models) == []


def test_the_write_policy_is_still_checked_under_a_seal(log: EventLog, db: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    grant = admin_grant()
    scheduler = writer_codec(data_dir, "scheduler", CODEC)  # a real key, not allowed identity events
    log.append([OutRecord("eventsvm.identity", grant.aggregate_id.encode(), scheduler.encode(grant)),
                *signed_records(data_dir, chains(2))])
    permissive = CODEC.keyed(None, key_ring(key_dir(data_dir)))  # every known key may write anything
    store = store_of(db, data_dir)
    seal_by_audit(log, permissive, store)  # a seal of signatures that all verify
    _, report = replay(log, trusting_codec(data_dir), sealing=Sealing(store.load(log)))
    assert report.sealed == report.records_read and report.undecodable == 1, "refused by the policy"


def test_a_seal_signed_by_another_key_is_ignored(log: EventLog, db: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "data"
    codec, store = signed_and_sealed(log, db, tmp_path, chains(3))
    elsewhere = tmp_path / "elsewhere"
    theirs = store_of(db, elsewhere)  # the same log sealed by another data dir's key
    seal_by_audit(log, codec, theirs)
    store.path.write_bytes(theirs.path.read_bytes())
    with pytest.raises(UntrustedSeal, match="not signed by this data directory's seal key"):
        store.load(log)
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["replay", "--log", f"sqlite://{db}", "--data-dir", str(data_dir)])
    assert args.func(args) == 0
    out, err = capsys.readouterr()
    assert "seal ignored, every signature verified" in err and "under a verified seal" not in out
    assert store.load(log) is not None, "the replay sealed what it verified with this data dir's key"


def test_a_seal_of_more_records_than_the_log_holds_is_refused(db: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = store_of(db, data_dir)
    with sqlite_log(db, 3, ALL_TOPICS) as log:
        log.append(signed_records(data_dir, chains(10)))
        seal_by_audit(log, trusting_codec(data_dir), store)
    db.unlink()
    with sqlite_log(db, 3, ALL_TOPICS) as log:  # the same place, fewer records: truncated
        log.append(signed_records(data_dir, chains(2)))
        with pytest.raises(UntrustedSeal, match="fewer records than the seal covers"):
            store.load(log)


def test_a_record_removed_inside_the_sealed_range_breaks_the_seal(log: EventLog, db: Path,
                                                                  tmp_path: Path) -> None:
    codec, store = signed_and_sealed(log, db, tmp_path, chains(10))
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM records WHERE off = 1 AND part = 0 AND topic_id = "
                     "(SELECT id FROM topics WHERE name = 'eventsvm.instance.spawned')")
    with pytest.raises(SealBroken, match="eventsvm.instance.spawned:0 offsets 0-"):
        replay(log, codec, sealing=Sealing(store.load(log)), stall_s=0.5)


def test_a_seal_needs_a_reader_that_verifies() -> None:
    with pytest.raises(ValueError, match="key ring"):
        replay(None, CODEC, sealing=Sealing())  # type: ignore[arg-type]


def test_the_read_model_starts_under_the_seal_and_rebuilds_verified_when_it_breaks(
        log: EventLog, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "data"
    events = chains(12)
    log.append(signed_records(data_dir, events))
    store = store_of(db, data_dir)

    def started() -> ReadModel:
        model = ReadModel(log, writer_codec(data_dir, "api", CODEC))
        model.start(tail=False, seals=store)
        return model

    first = started()  # no seal yet: every signature verified, then sealed
    assert store.load(log) is not None
    calls = []
    real = KeyRing.writer_of
    monkeypatch.setattr(KeyRing, "writer_of", lambda self, data: calls.append(1) or real(self, data))
    second = started()
    assert calls == [1], "only the seal's own signature is verified"
    assert model_differences(second.models, first.models) == []

    name = events[0].body["name"].encode()
    alter_stored(db, "eventsvm.instance.requested", 0, name, name[:-1] + b"X")
    calls.clear()
    third = started()
    assert len(calls) > len(events), "the broken seal was followed by a verification of every record"
    altered = (name[:-1] + b"X").decode()
    assert altered not in {i.name for i in third.models.instances.instances.values()}, "never folded"
    assert model_differences(third.models, replay(log, trusting_codec(data_dir))[0]) == []
    assert third.models.instances.events_folded == first.models.instances.events_folded - 1


# -- a batch vouched at once is the same reading as record by record -----------------------------
_PARTS = [("eventsvm.instance.requested", 0), ("eventsvm.instance.requested", 1),
          ("eventsvm.instance.spawned", 0)]


def _stream(lengths: list[int], seed: int) -> list[Record]:
    """Records of three partitions as a reader returns them: runs of one partition at a time, each
    partition in offset order (with gaps, as compaction leaves), values of any length."""
    rng = random.Random(seed)
    next_offset = {where: 0 for where in _PARTS}
    out = []
    for length in lengths:
        where = rng.choice(_PARTS)
        for _ in range(length):
            offset = next_offset[where]
            next_offset[where] = offset + rng.choice((1, 1, 1, 2))
            out.append(Record(where[0], where[1], offset, b"k", rng.randbytes(rng.randrange(0, 3000)), 0))
    return out


def _one_by_one(sealing: Sealing, records: list[Record]) -> list[bool]:
    return [sealing.vouched(r) for r in records]


def _in_batches(sealing: Sealing, records: list[Record], cuts: list[int]) -> list[bool]:
    flags: list[bool] = []
    bounds = sorted({0, len(records), *(c % (len(records) + 1) for c in cuts)})
    for start, end in zip(bounds, bounds[1:], strict=False):
        flags += sealing.vouch(records[start:end])
    return flags


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=12), seed=st.integers(0, 1 << 30),
       sealed_share=st.floats(0, 1.2), cuts=st.lists(st.integers(0, 500), max_size=6),
       refused_pick=st.integers(0, 1 << 30))
def test_vouching_a_batch_is_vouching_each_record(lengths: list[int], seed: int, sealed_share: float,
                                                  cuts: list[int], refused_pick: int) -> None:
    records = _stream(lengths, seed)
    # a seal of a prefix of each partition (or of all of it), some offsets in it refused
    first_reading = Sealing()
    prefix = records[:int(len(records) * min(sealed_share, 1.0))]
    _one_by_one(first_reading, prefix)
    for record in prefix[refused_pick % 7::7]:
        first_reading.refuse(record)
    seal = first_reading.seal("log")

    by_record, by_batch = Sealing(seal), Sealing(seal)
    assert _in_batches(by_batch, records, cuts) == _one_by_one(by_record, records)
    by_record.finish()
    by_batch.finish()
    assert by_batch.seal("log").partitions == by_record.seal("log").partitions
    assert by_batch.vouched_count == by_record.vouched_count


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=2, max_size=10), seed=st.integers(0, 1 << 30),
       victim=st.integers(0, 1 << 30), cuts=st.lists(st.integers(0, 500), max_size=6))
def test_a_batch_with_a_record_altered_inside_the_seal_breaks_it(lengths: list[int], seed: int, victim: int,
                                                                 cuts: list[int]) -> None:
    records = _stream(lengths, seed)
    first_reading = Sealing()
    _one_by_one(first_reading, records)
    seal = first_reading.seal("log")
    i = victim % len(records)
    altered = records[:i] + [records[i]._replace(value=records[i].value + b"!")] + records[i + 1:]

    sealing = Sealing(seal)
    with pytest.raises(SealBroken) as broken:
        _in_batches(sealing, altered, cuts)
        sealing.finish()
    assert broken.value.where == (records[i].topic, records[i].partition)
