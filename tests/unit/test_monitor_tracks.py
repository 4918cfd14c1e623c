"""The pipeline monitor follows each server's stage, and forgets a deleted server once the read
model has forgotten it (its retention of deleted servers): its memory is bounded as the read
model's is, not by every server the cloud ever ran (memory.waves found it growing by 230 B each)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventsvm.events.codec import Codec
from eventsvm.log.port import EventLog
from eventsvm.monitoring.metrics import PipelineMonitor
from eventsvm.projections.readmodel import ALL_TOPICS, ReadModel
from tests.factories import deletion_chain, instance_chain, sqlite_log


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EventLog]:
    with sqlite_log(tmp_path / "log.db", 2, ALL_TOPICS) as opened:
        yield opened


def test_a_deleted_server_is_tracked_as_long_as_the_read_model_holds_it(log: EventLog) -> None:
    rng = random.Random(8)
    model = ReadModel(log, Codec())
    model.start(tail=False)
    monitor = PipelineMonitor()
    monitor.attach(model)
    model.models.instances.deleted_retention_ms = 60_000  # a minute of log time
    waves = []
    for wave in range(3):
        boots = [instance_chain(rng) for _ in range(20)]
        for chain in boots:  # each wave an hour after the one before, in log time
            for event in chain:
                event.occurred_at += wave * 3_600_000
        deletes = [deletion_chain(chain[-1], rng) for chain in boots[:15]]
        for chain in [*boots, *deletes]:
            model.append(chain)
        with model.lock:
            model.models.settle()  # what the tail does once caught up
        waves.append(boots)

    counts, _ = monitor.stages_now()
    held = model.models.instances.instances
    # the read model still holds the last wave's deleted servers (within a minute), not the others'
    assert sum(1 for chain in waves[-1][:15] if chain[0].aggregate_id in held) == 15
    assert not any(chain[0].aggregate_id in held for boots in waves[:-1] for chain in boots[:15])
    # and so does the monitor: every server that is not deleted, and the deleted ones still held
    assert counts == {"spawned": 15, "deleted": 15}
    assert set(monitor.tracks) == {chain[0].aggregate_id for boots in waves for chain in boots[15:]} | {
        chain[0].aggregate_id for chain in waves[-1][:15]}
    # what it counted is not forgotten with the tracks
    assert monitor.passed["spawned"] == 60
