"""A whole cloud in the test process (every service in threads, a read model) on either engine."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from eventsvm.app.cluster import Cluster, ClusterOptions
from eventsvm.app.registry import host_service
from eventsvm.app.seed import choose_passwords, seed_events
from eventsvm.config import LogConfig
from eventsvm.events.codec import Codec
from eventsvm.events.model import EventType, Topic, new_event
from eventsvm.log.factory import open_log
from eventsvm.log.port import BEGINNING, EventLog
from eventsvm.projections.readmodel import Models, ReadModel
from eventsvm.runtime.fold_letters import FORGED
from eventsvm.runtime.host_routing import spawner_partitions
from eventsvm.state.instances import Instance
from eventsvm.virt.compute_host import HostCapacity
from tests.factories import plain_request


@dataclass
class Cloud:
    """A running cluster plus what a test needs to drive it like the API does."""

    cluster: Cluster
    options: ClusterOptions
    readmodel: ReadModel
    started: list[Cluster] = field(default_factory=list)
    # a test that appends forgeries on purpose says so; in any other, a forged letter means a writer
    # the write policy (eventsvm/app/writers.py) refuses something it legitimately writes
    forgeries_expected: bool = False

    @property
    def demo(self) -> tuple[str, str]:
        """(user id, project id) of the seeded demo user."""
        identity = self.readmodel.models.identity
        user = identity.user_by_name("demo", "default")
        project = identity.project_by_name("demo", "default")
        assert user is not None and project is not None
        return user.id, project.id

    def network_id(self, name: str = "private") -> str:
        """A seeded network's id."""
        return next(n["id"] for n in self.readmodel.models.catalog.networks.values() if n["name"] == name)

    def image_id(self) -> str:
        """The cirros image's id."""
        return next(iter(self.readmodel.models.catalog.images))

    def submit(self, name: str, flavor: str = "1", **extra: Any) -> str:
        """Append an instance.requested as POST /servers does; returns the instance id."""
        user_id, project_id = self.demo
        instance_id = str(uuid.uuid4())
        body = {**plain_request(name, flavor, self.image_id(), self.network_id(), "audit-" + name), **extra}
        event = new_event(
            EventType.INSTANCE_REQUESTED, instance_id, body, user_id=user_id, project_id=project_id
        )
        self.readmodel.append([event], [self.readmodel.partition_by(Topic.REQUESTED, project_id)])
        return instance_id

    def delete(self, instance_id: str) -> None:
        """Append an instance.delete_requested as DELETE /servers/{id} does."""
        inst = self.readmodel.models.instances.get(instance_id)
        assert inst is not None
        user_id, project_id = self.demo
        event = new_event(
            EventType.INSTANCE_DELETE_REQUESTED,
            instance_id,
            {"host": inst.host},
            user_id=user_id,
            project_id=project_id,
            sequence=inst.last_sequence + 1,
            prev_hash=inst.last_hash,
        )
        event.causation_id = inst.last_event_id
        self.readmodel.append([event])

    def unlimited_quota(self) -> None:
        """Lift the demo project's quota (-1 is unlimited, as in nova)."""
        _, project_id = self.demo
        self.readmodel.append(
            [
                new_event(
                    EventType.QUOTA_SET,
                    project_id,
                    {"project_id": project_id, "instances": -1, "cores": -1, "ram_mb": -1},
                )
            ]
        )

    def instance(self, instance_id: str) -> Instance:
        """The read model's view of an instance."""
        inst = self.readmodel.models.instances.get(instance_id)
        assert inst is not None
        return inst

    def wait_for(self, ids: list[str], statuses: set[str], timeout: float = 60.0) -> dict[str, Instance]:
        """Wait until every instance is in one of `statuses`; fail naming the laggards."""

        def done(models: Any) -> bool:
            return all((i := models.instances.get(x)) is not None and i.status in statuses for x in ids)

        if not self.readmodel.wait_until(done, timeout):
            laggards = {x: (self.readmodel.models.instances.get(x) or Instance(id=x)).status for x in ids}
            pytest.fail(f"not all in {statuses} after {timeout}s: {laggards}")
        return {x: self.instance(x) for x in ids}

    def restart(self) -> Models:
        """Stop every service (finishing the step in hand) and start them again on the same log;
        returns the whole log as it stood while nothing ran."""
        self.cluster.stop()
        stopped = fold_log(self.options.log)
        self.cluster = Cluster(self.options)
        self.readmodel = self.cluster.start_readmodel()
        self.cluster.start_services()
        self.started.append(self.cluster)
        return stopped


@pytest.fixture(params=["sqlite", pytest.param("kafka", marks=pytest.mark.kafka)])
def engine_url(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(log URL, namespace) for the engine under test."""
    if request.param == "kafka":
        return f"kafka://{request.getfixturevalue('kafka_bootstrap')}", f"e2e{uuid.uuid4().hex[:8]}."
    return f"sqlite://{tmp_path / 'log.db'}", ""


CloudFactory = Callable[..., Cloud]


@pytest.fixture
def make_cloud(engine_url: tuple[str, str], tmp_path: Path) -> Iterator[CloudFactory]:
    """Start a seeded cloud: `make_cloud(hosts=2, capacity=HostCapacity(...), partitions=4)`."""
    clouds: list[Cloud] = []

    def factory(
        hosts: int = 2,
        capacity: HostCapacity | None = None,
        partitions: int = 2,
        broken_hosts: dict[str, str] | None = None,
    ) -> Cloud:
        url, namespace = engine_url
        options = ClusterOptions(
            data_dir=tmp_path,
            log=LogConfig(url=url, namespace=namespace, partitions=partitions, session_timeout_s=6.0),
            hosts=hosts,
            capacity=capacity or HostCapacity(),
            broken_hosts=broken_hosts or {},
        )
        cluster = Cluster(options)
        readmodel = cluster.start_readmodel()
        readmodel.append(seed_events(choose_passwords("admin-pw", "demo-pw")))
        cluster.start_services()
        cloud = Cloud(cluster, options, readmodel, [cluster])
        clouds.append(cloud)
        return cloud

    yield factory
    for cloud in clouds:
        cloud.cluster.stop()
    for cloud in clouds:
        forged = [d.body["reason"] for d in cloud.readmodel.models.dead_letters
                  if d.body["error_type"] == FORGED]
        assert cloud.forgeries_expected or not forged, f"the cloud's own writers were refused: {forged}"


# The stages every server passes on its way to ACTIVE, in order.
STAGES = (
    "instance.requested",
    "instance.authenticated",
    "instance.scheduled",
    "instance.resources_resolved",
    "instance.spawned",
)


def fold_log(config: LogConfig) -> Models:
    """The whole log as it stands now, folded by a read model of its own on a fresh connection."""
    log_ = open_log(config)
    try:
        readmodel = ReadModel(log_, Codec())
        readmodel.start(tail=False)
        readmodel.close()
        return readmodel.models
    finally:
        log_.close()


def log_events(models: Models, instance_id: str) -> list[str]:
    """Every event type of one instance, in the order folded."""
    inst = models.instances.get(instance_id)
    assert inst is not None, f"{instance_id} is not in the log"
    return [action[0] for action in inst.actions]


def in_flight(models: Models) -> list[str]:
    """Instances the log shows between two stages: a service has acted on them (authenticated),
    and they are not spawned, failed for good or deleted yet."""
    return [
        inst.id
        for inst in models.instances.instances.values()
        if "instance.authenticated" in (events := [a[0] for a in inst.actions])
        and "instance.spawned" not in events
        and inst.status not in ("ERROR", "DELETED")
    ]


def _pending_inputs(log_: EventLog, group: str, topic: str, partitions: list[int]) -> list[str]:
    """Records of `topic` (in `partitions`) that `group` has not committed past."""
    committed = log_.committed(group, topic)
    ends = log_.end_offsets(topic)
    behind = [p for p in partitions if committed.get(p, 0) < ends[p]]
    if not behind:
        return []
    # On Kafka a transaction marker takes an offset, so "committed < end" may hide no record at all.
    reader = log_.reader([topic], BEGINNING, partitions=[(topic, p) for p in behind])
    try:
        records = []
        deadline = time.monotonic() + 10
        while not reader.at_end():
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            records += reader.poll(5000, timeout=0.1)
    finally:
        reader.close()
    return [f"{group} {topic}/{r.partition}@{r.offset}"
            for r in records if r.offset >= committed.get(r.partition, 0)]


# What services read: (consumer group, topic, partitions).
Inputs = list[tuple[str, str, list[int]]]


def reading(group: str, partitions: list[tuple[str, int]]) -> Inputs:
    """What `group` reads when it reads `partitions`, a topic at a time."""
    topics = sorted({t for t, _ in partitions})
    return [(group, topic, [p for t, p in partitions if t == topic]) for topic in topics]


def spawner_reading(log_: EventLog, host: str, slot: int) -> Inputs:
    """What the spawner of `host` (in `slot`) reads, as eventsvm.app.cluster.spawner_runner has it."""
    group = f"eventsvm.{host_service('spawner', host).name}"
    return reading(group, spawner_partitions(log_.partitions, slot))


def runner_inputs(cloud: Cloud) -> Inputs:
    """What every service of the cloud's cluster reads."""
    log_ = cloud.readmodel.log
    inputs: Inputs = []
    for runner in cloud.cluster.runners:
        wanted = runner.partitions or [
            (str(t), p) for t in runner.service.inputs for p in range(log_.partitions(str(t)))]
        inputs += reading(runner.group, wanted)
    return inputs


def wait_quiet(cloud: Cloud, timeout: float = 30.0) -> None:
    """wait_log_quiet for every service of the cloud's cluster."""
    wait_log_quiet(cloud.options.log, runner_inputs(cloud), timeout)


def wait_log_quiet(config: LogConfig, inputs: Inputs, timeout: float = 30.0) -> None:
    """Wait until the log shows nothing left to do: every group has committed past every record
    of its inputs, and no input topic's end moved meanwhile. Fails naming what is still pending."""
    topics = sorted({topic for _, topic, _ in inputs})
    log_ = open_log(config)
    try:
        deadline = time.monotonic() + timeout
        while True:
            before = {t: log_.end_offsets(t) for t in topics}
            pending = [p for group, topic, partitions in inputs
                       for p in _pending_inputs(log_, group, topic, partitions)]
            if not pending and {t: log_.end_offsets(t) for t in topics} == before:
                return
            assert time.monotonic() < deadline, f"still pending after {timeout:g} s: {pending[:10]}"
            time.sleep(0.1)
    finally:
        log_.close()
