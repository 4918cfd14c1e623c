"""Verified seals on a running cloud, on both engines (issue 14 item 3, issue 15 item 6): a replay
under the seal an audit wrote rebuilds the very read models a replay verifying every signature
does; what is appended after the seal is still verified one by one (a forgery refused); a seal
whose digests are not this log's (one taken of another log) breaks the replay; and on SQLite, a
record rewritten in the database file inside the sealed range does too."""

from __future__ import annotations

import sqlite3
import uuid
from collections import Counter
from pathlib import Path

import pytest

from eventsvm.app.writers import key_dir, trusting_codec, writer_codec
from eventsvm.config import LogConfig
from eventsvm.events.codec import Codec
from eventsvm.events.model import EventType, Topic, new_event
from eventsvm.log.factory import open_log
from eventsvm.log.port import BEGINNING, EventLog, OutRecord, Record
from eventsvm.projections.audit import verify
from eventsvm.projections.readmodel import ALL_TOPICS
from eventsvm.projections.replay import Drain, model_differences, replay
from eventsvm.projections.seal import Seal, SealBroken, Sealing, SealStore
from tests.e2e.conftest import Cloud, CloudFactory, wait_quiet

REPLAYED_TOPICS = {str(t) for t in ALL_TOPICS}


def every_record(log: EventLog) -> list[Record]:
    reader = log.reader([str(t) for t in Topic if str(t) in set(log.list_topics())], BEGINNING)
    try:
        return [r for batch in Drain(reader) for r in batch]
    finally:
        reader.close()


def sealed_records(seal: Seal) -> int:
    """What a replay (which reads the read models' topics) finds under `seal`."""
    return sum(p.count - len(p.refused) for (topic, _), p in seal.partitions.items()
               if topic in REPLAYED_TOPICS)


def boot(cloud: Cloud, names: list[str]) -> None:
    cloud.wait_for([cloud.submit(name) for name in names], {"ACTIVE"}, timeout=90)
    wait_quiet(cloud)


def other_log(cloud: Cloud, tmp_path: Path) -> LogConfig:
    """A second log on the same engine (another SQLite file, another namespace on the broker)."""
    config = cloud.options.log
    if config.engine == "sqlite":
        return LogConfig(url=f"sqlite://{tmp_path / 'other.db'}", partitions=config.partitions)
    return LogConfig(url=config.url, namespace=f"e2e{uuid.uuid4().hex[:8]}.", partitions=config.partitions)


def test_a_sealed_replay_matches_a_verified_one_and_refuses_what_changed(make_cloud: CloudFactory,
                                                                        tmp_path: Path) -> None:
    cloud = make_cloud(hosts=1)
    cloud.forgeries_expected = True
    boot(cloud, ["sealed-0", "sealed-1", "sealed-2"])
    data_dir = cloud.options.data_dir
    store = SealStore(data_dir, key_dir(data_dir), cloud.options.log.identity)
    log = open_log(cloud.options.log)
    try:
        # the auditor verifies every signature and seals what it verified
        sealing = Sealing()
        audit = verify(log, trusting_codec(data_dir), sealing=sealing)
        assert audit.clean, [f.detail for f in audit.findings]
        seal = store.save(sealing)
        assert seal.records() == audit.events

        # after the seal: one more server, and a grant signed by a key no writer of this cloud holds
        boot(cloud, ["after-seal"])
        demo_user, _ = cloud.demo
        grant = new_event(EventType.ROLE_ASSIGNED, f"{demo_user}:p-admin",
                          {"user_id": demo_user, "project_id": "p-admin", "role": "admin"})
        stranger = writer_codec(tmp_path / "elsewhere", "api", Codec())
        log.append([OutRecord(str(Topic.IDENTITY), grant.aggregate_id.encode(), stranger.encode(grant))])
        wait_quiet(cloud)
        cloud.cluster.stop()  # the log stands still from here

        verified, full = replay(log, trusting_codec(data_dir))
        models, report = replay(log, trusting_codec(data_dir), sealing=Sealing(store.load(log)))
        assert report.sealed == sealed_records(seal) > 0
        assert report.records_read > report.sealed, "what came after the seal was read too"
        assert report.undecodable == full.undecodable == 1, "the forged grant after the seal is refused"
        assert model_differences(models, verified) == []
        assert report.instances_by_status == {"ACTIVE": 4}
        assert "admin" not in models.identity.roles_of(demo_user, "p-admin")

        # a seal of another log, signed with this data dir's key and named for this log: its
        # digests are not this log's (the other holds the same records but the first one of the
        # fullest partition a replay reads, so the two differ within what the seal covers)
        records = every_record(log)
        sizes = Counter((r.topic, r.partition) for r in records if r.topic in REPLAYED_TOPICS)
        fullest = max(sizes, key=lambda where: sizes[where])
        skipped = next(r for r in records if (r.topic, r.partition) == fullest)
        other = open_log(other_log(cloud, tmp_path))
        try:
            other.create_topics(sorted({r.topic for r in records}))
            other.append([OutRecord(r.topic, r.key, r.value, partition=r.partition) for r in records
                          if r is not skipped])
            foreign = Sealing()
            verify(other, trusting_codec(data_dir), sealing=foreign)
        finally:
            other.close()
        store.save(foreign)
        with pytest.raises(SealBroken, match="no longer match the verified seal"):
            replay(log, trusting_codec(data_dir), sealing=Sealing(store.load(log)))
    finally:
        log.close()


# a Kafka record cannot be rewritten: the foreign seal above stands for it there
@pytest.mark.parametrize("engine_url", ["sqlite"], indirect=True)
def test_a_record_rewritten_in_the_sqlite_file_breaks_the_seal(make_cloud: CloudFactory) -> None:
    cloud = make_cloud(hosts=1)
    boot(cloud, ["rewritten"])
    cloud.cluster.stop()
    data_dir = cloud.options.data_dir
    store = SealStore(data_dir, key_dir(data_dir), cloud.options.log.identity)
    log = open_log(cloud.options.log)
    try:
        sealing = Sealing()
        verify(log, trusting_codec(data_dir), sealing=sealing)
        store.save(sealing)
        db = Path(cloud.options.log.url.removeprefix("sqlite://"))
        with sqlite3.connect(db) as conn:  # the flavor's name, as someone holding the file could
            ((part, off, value),) = conn.execute(
                "SELECT part, off, value FROM records JOIN topics ON topics.id = topic_id "
                "WHERE name = ? AND instr(value, ?) > 0", (str(Topic.REQUESTED), b"rewritten")).fetchall()
            conn.execute("UPDATE records SET value = ? WHERE part = ? AND off = ? AND topic_id = "
                         "(SELECT id FROM topics WHERE name = ?)",
                         (value.replace(b"rewritten", b"rewritteX", 1), part, off, str(Topic.REQUESTED)))
        with pytest.raises(SealBroken, match=f"{Topic.REQUESTED}:{part} offsets "):
            replay(log, trusting_codec(data_dir), sealing=Sealing(store.load(log)))
        _, report = replay(log, trusting_codec(data_dir))
        assert report.undecodable == 1, "verified one by one, the rewritten record is refused"
    finally:
        log.close()
