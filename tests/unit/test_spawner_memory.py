"""The spawner's memory of deleted instances is bounded (issue 14): what it answered for an
instance, and that the instance is gone, is dropped once its deletion is older than the horizon,
and only with every state topic folded to its end; a redelivery within the horizon still makes
no second domain, before and after a restart."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers import spawner
from eventsvm.app.cluster import register_host, simulated_host, spawner_runner
from eventsvm.config import LogConfig
from eventsvm.events.builders import deleted
from eventsvm.events.codec import Codec
from eventsvm.events.model import Event, EventType, Topic, new_event
from eventsvm.log.factory import open_log
from eventsvm.log.port import BEGINNING, EventLog, OutRecord
from eventsvm.runtime import runner as runner_module
from eventsvm.runtime.runner import ServiceRunner
from eventsvm.virt.compute_host import ComputeHost, HostCapacity
from tests.unit.test_deciders import folded, resolved_for

HORIZON_MS = 300


@pytest.fixture
def cloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[tuple[EventLog, Codec, ComputeHost, ServiceRunner[Any]]]:
    # settled (what is past the horizon forgotten) whenever it is due, not at most once a second:
    # what is remembered then follows the horizon alone, not where the last settle fell
    monkeypatch.setattr(runner_module, "SETTLE_EVERY_S", 0.0)
    codec = Codec()
    log = open_log(LogConfig(url=f"sqlite://{tmp_path / 'log.db'}", partitions=1))
    host = simulated_host(tmp_path, "h0", 0, HostCapacity())
    register_host(log, codec, host, "test")
    runner = spawner_runner(log, codec, host)
    runner.service = dataclasses.replace(
        runner.service,
        initial_state=lambda: spawner.SpawnerState(hosts=frozenset({"h0"}), forget_after_ms=HORIZON_MS))
    runner.start()
    yield log, codec, host, runner
    runner.close()
    host.hypervisor.close()
    log.close()


def _append(log: EventLog, codec: Codec, topic: Topic, event: Event) -> None:
    log.append([OutRecord(str(topic), event.aggregate_id.encode(), codec.encode(event), 0)])


def _spawned(log: EventLog, codec: Codec) -> list[Event]:
    reader = log.reader([str(Topic.SPAWNED)], BEGINNING)
    try:
        return [codec.decode(r.value) for r in reader.poll(10_000, timeout=0.2)]
    finally:
        reader.close()


def _sizes(state: spawner.SpawnerState) -> tuple[int, int]:
    return len(state.gone), sum(len(ids) for ids in state.answered.values())


def test_many_builds_and_deletes_leave_a_bounded_memory_and_no_second_domain(cloud: Any) -> None:
    log, codec, host, runner = cloud
    cycles, builds = 40, []
    for _ in range(cycles):
        build = resolved_for(host="h0")
        _append(log, codec, Topic.RESOURCES_RESOLVED, build)
        runner.step()
        [spawned] = [e for e in _spawned(log, codec) if e.aggregate_id == build.aggregate_id]
        _append(log, codec, Topic.DELETED, deleted(spawned, None, "api"))
        runner.step()
        builds.append(build)
        time.sleep(0.02)
    runner.step()
    assert host.hypervisor.list_instances() == []
    # about HORIZON_MS / 25 ms of the most recent deletions are remembered, not all 40
    gone, answered = _sizes(runner.state)
    assert 1 <= gone < cycles / 2 and answered <= gone, (gone, answered)
    assert builds[-1].aggregate_id in runner.state.gone

    # the last build redelivered (the log holding it twice): refused, no domain, no `spawned`
    _append(log, codec, Topic.RESOURCES_RESOLVED, builds[-1])
    runner.step()
    assert host.hypervisor.list_instances() == []
    assert len(_spawned(log, codec)) == cycles

    # a restart folds the whole log again and settles to the same bound
    runner.rebuild()
    assert _sizes(runner.state)[0] < cycles / 2 and builds[-1].aggregate_id in runner.state.gone
    _append(log, codec, Topic.RESOURCES_RESOLVED, builds[-1])
    runner.step()
    assert host.hypervisor.list_instances() == [] and len(_spawned(log, codec)) == cycles


def test_a_deletion_is_forgotten_only_by_settling_so_a_spawned_read_late_takes_no_claim() -> None:
    service = spawner.service_for("h0")
    build = resolved_for(host="h0")
    spawned = dataclasses.replace(_spawn_of(build), occurred_at=1_000)
    gone = dataclasses.replace(deleted(spawned, "h0", "spawner"), occurred_at=2_000)
    later = dataclasses.replace(deleted(resolved_for(host="h0"), None, "api"), occurred_at=2_000 + 7_200_000)
    # a replay that reads the deletions before the spawned: the fold alone forgets nothing
    state = folded(service, [gone, later, spawned])
    assert state.claims == {} and build.aggregate_id in state.gone
    assert service.settle is not None
    settled = service.settle(state)
    assert build.aggregate_id not in settled.gone and list(settled.gone) == [later.aggregate_id]


def _spawn_of(build: Event) -> Event:
    body = {"host": "h0", "domain_name": "instance-1", "power_state": 1, "launched_at": 1, "attempt": 1,
            "flavor": build.body["spec"]["flavor"], "addresses": [], "claim": None}
    return new_event(EventType.INSTANCE_SPAWNED, build.aggregate_id, body, cause=build)
