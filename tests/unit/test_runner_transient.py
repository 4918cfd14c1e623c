"""A hypervisor out of reach is not the instance's fault: the runner abandons the step (nothing
committed, nothing dead-lettered) and decides the same input again once the hypervisor answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventsvm.app.cluster import register_host, simulated_host, spawner_runner
from eventsvm.config import LogConfig
from eventsvm.events.codec import Codec
from eventsvm.events.model import Topic
from eventsvm.log.factory import open_log
from eventsvm.log.port import BEGINNING, OutRecord
from eventsvm.runtime import runner as runner_module
from eventsvm.virt.compute_host import HostCapacity
from eventsvm.virt.hypervisor import Hypervisor
from tests.unit.test_deciders import resolved_for


def topic_events(log, codec: Codec, topic: Topic) -> list:
    reader = log.reader([str(topic)], BEGINNING)
    try:
        return [codec.decode(r.value) for r in reader.poll(1000, timeout=0.2)]
    finally:
        reader.close()


def test_a_hypervisor_outage_delays_the_spawn_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "TRANSIENT_BACKOFF_S", (0.01,))
    codec = Codec()
    log = open_log(LogConfig(url=f"sqlite://{tmp_path / 'log.db'}", partitions=1))
    host = simulated_host(tmp_path, "h0", 0, HostCapacity())
    register_host(log, codec, host, "test")
    runner = spawner_runner(log, codec, host)
    runner.start()
    event = resolved_for(host="h0")
    log.append(
        [OutRecord(str(Topic.RESOURCES_RESOLVED), event.aggregate_id.encode(), codec.encode(event), 0)]
    )
    uri = host.hypervisor.uri
    host.hypervisor.close()  # every call now raises HypervisorUnavailable
    assert runner.step() == 0
    assert log.committed(runner.group, str(Topic.RESOURCES_RESOLVED)) == {}
    assert topic_events(log, codec, Topic.DEAD_LETTER) == []
    assert topic_events(log, codec, Topic.SPAWNED) == []
    host.hypervisor = Hypervisor(uri)
    for _ in range(20):
        if runner.step():
            break
    [spawned] = topic_events(log, codec, Topic.SPAWNED)
    assert spawned.aggregate_id == event.aggregate_id
    assert host.hypervisor.list_instances() == [event.aggregate_id]
    runner.close()
    host.hypervisor.close()
    log.close()
