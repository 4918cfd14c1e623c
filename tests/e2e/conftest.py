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
from eventsvm.app.seed import choose_passwords, seed_events
from eventsvm.config import LogConfig
from eventsvm.events.model import EventType, Topic, new_event
from eventsvm.projections.readmodel import ReadModel
from eventsvm.state.instances import Instance
from eventsvm.virt.compute_host import HostCapacity


@dataclass
class Cloud:
    """A running cluster plus what a test needs to drive it like the API does."""

    cluster: Cluster
    options: ClusterOptions
    readmodel: ReadModel
    started: list[Cluster] = field(default_factory=list)

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
        body = {
            "name": name,
            "flavor_id": flavor,
            "image_id": self.image_id(),
            "networks": [{"network_id": self.network_id(), "port_id": None, "fixed_ip": None}],
            "key_name": None,
            "availability_zone": None,
            "server_group_id": None,
            "block_devices": [],
            "metadata": {},
            "roles": ["member"],
            "token_audit_id": "audit-" + name,
            **extra,
        }
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

    def restart(self) -> None:
        """Stop every service (finishing the step in hand) and start them again on the same log."""
        self.cluster.stop()
        self.cluster = Cluster(self.options)
        self.readmodel = self.cluster.start_readmodel()
        self.cluster.start_services()
        self.started.append(self.cluster)


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


def log_events(cloud: Cloud, instance_id: str) -> list[str]:
    """Every event type of one instance, as folded by a fresh full read of the log."""
    inst = cloud.instance(instance_id)
    return [action[0] for action in inst.actions]


def wait_quiet(seconds: float = 0.5) -> None:
    """Let in-flight steps land before counting."""
    time.sleep(seconds)
