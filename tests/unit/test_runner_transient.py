"""A hypervisor out of reach is not the instance's fault: the runner abandons the step (nothing
committed, nothing dead-lettered, the state rebuilt from the log) and decides the same input again
once the hypervisor answers."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from eventsvm.app.cluster import register_host, simulated_host, spawner_runner
from eventsvm.config import LogConfig
from eventsvm.events.codec import Codec
from eventsvm.events.model import Event, Topic
from eventsvm.log.factory import open_log
from eventsvm.log.port import BEGINNING, OutRecord
from eventsvm.runtime import runner as runner_module
from eventsvm.runtime.service import StepContext, Transient
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

    # What the runner does is read from two spies: every decision (its input and how it ended)
    # and every rebuild of the state from the log.
    decisions: list[tuple[str, str]] = []
    decide = runner.service.decide

    def spied_decide(state: Any, event: Event, ctx: StepContext) -> Any:
        try:
            outputs = decide(state, event, ctx)
        except Transient:
            decisions.append((event.event_id, "transient"))
            raise
        decisions.append((event.event_id, "decided"))
        return outputs

    runner.service = dataclasses.replace(runner.service, decide=spied_decide)
    rebuilds: list[int] = []
    rebuild = runner.rebuild
    monkeypatch.setattr(runner, "rebuild", lambda: (rebuilds.append(1), rebuild())[1])
    runner.start()
    assert len(rebuilds) == 1  # the start's own rebuild

    event = resolved_for(host="h0")
    log.append(
        [OutRecord(str(Topic.RESOURCES_RESOLVED), event.aggregate_id.encode(), codec.encode(event), 0)]
    )
    uri = host.hypervisor.uri
    host.hypervisor.close()  # every call now raises HypervisorUnavailable

    # An empty poll also returns 0; this step read the input, decided on it and was abandoned.
    assert runner.step() == 0
    assert decisions == [(event.event_id, "transient")]
    assert len(rebuilds) == 2, "an abandoned step must rebuild the state from the log"
    assert log.committed(runner.group, str(Topic.RESOURCES_RESOLVED)) == {}
    assert topic_events(log, codec, Topic.DEAD_LETTER) == []
    assert topic_events(log, codec, Topic.SPAWNED) == []

    host.hypervisor = Hypervisor(uri)
    # The abandoned input comes back (the member was rewound), and is decided once more.
    assert runner.step() == 1
    assert decisions == [(event.event_id, "transient"), (event.event_id, "decided")]
    assert log.committed(runner.group, str(Topic.RESOURCES_RESOLVED)) == {0: 1}
    [spawned] = topic_events(log, codec, Topic.SPAWNED)
    assert spawned.aggregate_id == event.aggregate_id
    assert spawned.causation_id == event.event_id
    assert topic_events(log, codec, Topic.DEAD_LETTER) == []
    assert host.hypervisor.list_instances() == [event.aggregate_id]
    # and nothing more: the input is not decided a third time
    assert runner.step() == 0
    assert len(decisions) == 2
    runner.close()
    host.hypervisor.close()
    log.close()
