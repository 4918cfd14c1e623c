"""`audit verify` on a log a whole cloud wrote: clean as written, and one altered byte of one stored
event is named with its place, on each engine.

SQLite: the byte is changed in the engine's own table, behind the log's back, as an intruder with
the file would. Kafka: stored records cannot be changed through any client, so the test copies every
instance topic record for record (same partitions, same order, same bytes) into a fresh namespace,
altering one byte of one record on the way, and verifies the copy. That proves the verifier, reading
through the Kafka engine, names a one-byte change in what a broker stores and serves; it does not
prove anything about a broker's own on-disk segments, which only broker access could alter.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import replace

from eventsvm.app.writers import writer_ring
from eventsvm.config import parse_log_url
from eventsvm.events.codec import Codec
from eventsvm.events.model import INSTANCE_TOPICS, Topic
from eventsvm.log.factory import open_log
from eventsvm.log.port import BEGINNING, EventLog, OutRecord, Record
from eventsvm.projections.audit import ALTERED, verify
from eventsvm.projections.replay import Drain
from tests.e2e.conftest import CloudFactory, wait_quiet


def read_all(log: EventLog, topics: list[str]) -> list[Record]:
    reader = log.reader(topics, BEGINNING)
    try:
        return [r for batch in Drain(reader) for r in batch]
    finally:
        reader.close()


def altered(value: bytes, marker: bytes) -> bytes:
    """`value` with one byte inside `marker` (a server's name) changed."""
    at = value.index(marker) + 2
    return value[:at] + bytes([value[at] ^ 0x20]) + value[at + 1:]


def test_one_altered_byte_of_a_stored_event_is_named(make_cloud: CloudFactory) -> None:
    cloud = make_cloud(hosts=1)
    ids = [cloud.submit(f"audited-{n}") for n in range(3)]
    cloud.wait_for(ids, {"ACTIVE", "ERROR"}, timeout=60)
    cloud.delete(ids[2])
    cloud.wait_for([ids[2]], {"DELETED"}, timeout=60)
    wait_quiet(cloud)
    codec = Codec()
    config = cloud.options.log
    topics = [str(t) for t in INSTANCE_TOPICS]
    log = open_log(config)
    try:
        whole = verify(log, codec.keyed(None, writer_ring(cloud.options.data_dir)))
        assert whole.clean, whole.findings  # every topic, every writer's signature
        clean = verify(log, codec, topics=INSTANCE_TOPICS)
        assert clean.clean, clean.findings
        assert clean.instances == 3 and clean.links >= 3 * 4
        (target,) = [r for r in read_all(log, [str(Topic.REQUESTED)]) if r.key == ids[1].encode()]
        event_id = codec.decode(target.value).event_id
        if config.engine == "sqlite":
            with sqlite3.connect(parse_log_url(config.url)[1]) as conn:
                conn.execute("UPDATE records SET value = ? WHERE part = ? AND off = ? AND topic_id = "
                             "(SELECT id FROM topics WHERE name = ?)",
                             (altered(target.value, b"audited-1"), target.partition, target.offset,
                              target.topic))
            where = (target.topic, target.partition, target.offset)
            checked = log
        else:
            copy = open_log(replace(config, namespace=f"audit{uuid.uuid4().hex[:8]}."))
            copy.create_topics(topics, log.partitions(topics[0]))
            where = ("", -1, -1)
            for record in read_all(log, topics):
                value = altered(record.value, b"audited-1") if record == target else record.value
                out = OutRecord(record.topic, record.key, value, record.partition)
                ((partition, offset),) = copy.append([out])
                if record == target:
                    where = (record.topic, partition, offset)
            checked = copy
        try:
            report = verify(checked, codec)
        finally:
            if checked is not log:
                checked.close()
    finally:
        log.close()
    (finding,) = report.findings
    assert finding.kind == ALTERED
    assert (finding.topic, finding.partition, finding.offset) == where
    assert (finding.instance, finding.event_id) == (ids[1], event_id)
    assert "one of the two was altered" in finding.detail
