"""Snapshots: a restart folds only the tail, ends in the state a full replay gives, and never
trusts a snapshot written by other code, for another log, or damaged on disk."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers import scheduler
from eventsvm.config import LogConfig
from eventsvm.events.codec import Codec
from eventsvm.events.model import Event, EventType
from eventsvm.log.factory import open_log
from eventsvm.log.port import EventLog
from eventsvm.projections.readmodel import ALL_TOPICS
from eventsvm.runtime.runner import ServiceRunner
from eventsvm.runtime.service import Service
from eventsvm.runtime.snapshot import SnapshotStore
from tests.factories import HOSTS, event_records, instance_chain, sample_event


class CountingCodec(Codec):
    """The real codec, counting decodes: how a test sees what a rebuild actually read."""

    decoded = 0

    def decode(self, data: bytes) -> Event:
        self.decoded += 1
        return super().decode(data)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'log.db'}"


@pytest.fixture
def log(url: str) -> Iterator[EventLog]:
    opened = open_log(LogConfig(url=url, partitions=3))
    opened.create_topics([str(t) for t in ALL_TOPICS])
    yield opened
    opened.close()


def append(log: EventLog, events: list[Event]) -> None:
    log.append(event_records(events))


def hosts_and_builds(rng: random.Random, builds: int) -> list[Event]:
    hosts = []
    for slot, name in enumerate(HOSTS):
        host = sample_event(EventType.HOST_REGISTERED, rng)
        host.aggregate_id, host.body = name, dict(host.body, name=name, slot=slot)
        hosts.append(host)
    return hosts + [e for _ in range(builds) for e in instance_chain(rng)]


def rebuilt(log: EventLog, service: Service[Any], store: SnapshotStore | None) -> tuple[Any, int]:
    """(state, records decoded) of a runner rebuilding from the log."""
    codec = CountingCodec()
    runner = ServiceRunner(log, service, codec, member_name="test", snapshots=store, snapshot_every=10)
    runner.rebuild()
    if runner._reader is not None:
        runner._reader.close()
    return runner.state, codec.decoded


def test_a_snapshot_plus_the_tail_is_the_state_a_full_replay_gives(log: EventLog, tmp_path: Path) -> None:
    rng = random.Random(1)
    store = SnapshotStore(tmp_path / "snapshots", "the-log")
    append(log, hosts_and_builds(rng, 30))
    first, decoded_in_full = rebuilt(log, scheduler.SERVICE, store)
    assert store.path("scheduler").exists()
    tail = [e for _ in range(5) for e in instance_chain(rng)]
    append(log, tail)
    resumed, decoded_from_snapshot = rebuilt(log, scheduler.SERVICE, store)
    full, _ = rebuilt(log, scheduler.SERVICE, None)
    assert resumed == full
    assert resumed != first, "the tail placed five more instances"
    assert decoded_from_snapshot == 5  # one scheduled event per build; nothing the snapshot covers
    assert decoded_in_full == len(HOSTS) + 30


def test_a_snapshot_of_an_older_state_version_is_ignored(log: EventLog, tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots", "the-log")
    append(log, hosts_and_builds(random.Random(2), 20))
    rebuilt(log, scheduler.SERVICE, store)
    newer = dataclasses.replace(scheduler.SERVICE, extra={"state_version": 2})
    state, decoded = rebuilt(log, newer, store)
    assert decoded == len(HOSTS) + 20, "replayed in full"
    assert state == rebuilt(log, scheduler.SERVICE, None)[0]


@pytest.mark.parametrize("damage", ["flip a payload byte", "truncate", "not a snapshot"])
def test_a_damaged_snapshot_file_is_ignored(log: EventLog, tmp_path: Path, damage: str) -> None:
    store = SnapshotStore(tmp_path / "snapshots", "the-log")
    append(log, hosts_and_builds(random.Random(3), 20))
    rebuilt(log, scheduler.SERVICE, store)
    path = store.path("scheduler")
    data = bytearray(path.read_bytes())
    if damage == "flip a payload byte":
        data[-20] ^= 0x01
    elif damage == "truncate":
        del data[len(data) // 2:]
    else:
        data = bytearray(b"PK\x03\x04 something else")
    path.write_bytes(bytes(data))
    assert store.load(scheduler.SERVICE, log) is None
    state, decoded = rebuilt(log, scheduler.SERVICE, store)
    assert decoded == len(HOSTS) + 20
    assert state == rebuilt(log, scheduler.SERVICE, None)[0]


def test_a_snapshot_of_another_log_is_ignored(log: EventLog, tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots", "the-log")
    append(log, hosts_and_builds(random.Random(4), 20))
    rebuilt(log, scheduler.SERVICE, store)
    assert store.load(scheduler.SERVICE, log) is not None
    assert SnapshotStore(store.directory, "another-log").load(scheduler.SERVICE, log) is None
    shorter = open_log(LogConfig(url=f"sqlite://{tmp_path / 'fresh.db'}", partitions=3))
    try:
        shorter.create_topics([str(t) for t in scheduler.SERVICE.state_topics])
        assert store.load(scheduler.SERVICE, shorter) is None, "the log ends before the snapshot's positions"
    finally:
        shorter.close()
