"""A cluster that loses a broker (issue 14 item 10): three KRaft nodes on loopback, the event
topics with three replicas and min.insync.replicas 2, and the broker leading the most partitions
SIGKILLed in the middle of a 200-server load, started again later. Every server ends ACTIVE,
nothing is lost or written twice, no service exits.

Three JVMs and a whole cloud are too much for `make test` on two cores: `make chaos` runs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from eventsvm.config import LogConfig
from eventsvm.log.factory import open_log
from eventsvm.log.port import OutRecord
from tests.chaos.test_broker_loss import Creator, demo_without_quota, eventsvm_up
from tests.conftest import ROOT
from tests.e2e.conftest import STAGES, fold_log
from tests.processes import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.cluster, pytest.mark.timeout(1500)]

BROKERS = 3
SERVERS = int(os.environ.get("EVENTSVM_CLUSTER_SERVERS", "200"))
CLIENTS = 4
DOWN_S = 20.0
KAFKA_SH = ROOT / "scripts" / "kafka.sh"


def _free_run(length: int) -> int:
    """The first of `length` consecutive free loopback ports (the cluster's are fixed by its first)."""
    for _ in range(200):
        first = 20000 + int.from_bytes(os.urandom(2), "big") % 30000
        try:
            for port in range(first, first + length):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise AssertionError(f"no {length} consecutive free ports")


@dataclass
class KafkaCluster:
    """scripts/kafka.sh's three-node cluster on `first`..`first`+2 (controllers on the next three)."""

    first: int

    @property
    def ports(self) -> list[int]:
        return [self.first + n for n in range(BROKERS)]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def script(self, command: str) -> None:
        done = subprocess.run(["bash", str(KAFKA_SH), command, str(self.first), str(BROKERS)],
                              capture_output=True, text=True, timeout=600, check=False,
                              env={**os.environ, "KAFKA_START_TIMEOUT_S": "400"})
        assert done.returncode == 0, done.stdout + done.stderr

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})

    def busiest_leader(self) -> int:
        """The node id leading the most partitions, every topic counted (internal ones too)."""
        metadata = self.admin().list_topics(timeout=10)
        leaders = Counter(p.leader for t in metadata.topics.values() for p in t.partitions.values())
        return leaders.most_common(1)[0][0]

    def kill(self, node_id: int) -> None:
        """SIGKILL one node, as a crash or an OOM kill would end it."""
        pid = int((ROOT / ".kafka" / str(self.first + node_id - 1) / "broker.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[KafkaCluster]:
    given = os.environ.get("EVENTSVM_CLUSTER_PORT")  # the first of six ports kept for it
    cluster = KafkaCluster(int(given) if given else _free_run(2 * BROKERS))
    try:
        cluster.script("start")
        # One transactional append: the cluster makes its transaction log (3 copies) now, not
        # under the cloud's first request.
        warm = open_log(LogConfig(url=f"kafka://{cluster.bootstrap}", namespace=f"w{uuid.uuid4().hex[:6]}."))
        warm.create_topics(["warm"])
        warm.append([OutRecord("warm", b"k", b"v")])
        warm.close()
        yield cluster
    finally:
        cluster.script("stop")
        for port in range(cluster.first, cluster.first + BROKERS):
            log = ROOT / ".kafka" / str(port) / "broker.log"
            if log.exists():  # kept with the test's files, for a failure's post-mortem
                shutil.copy(log, tmp_path / f"broker-{port}.log")
            shutil.rmtree(ROOT / ".kafka" / str(port), ignore_errors=True)


def test_a_cluster_losing_its_busiest_broker_mid_load_finishes_every_server_once(
    cluster: KafkaCluster, tmp_path: Path
) -> None:
    namespace = f"cluster{uuid.uuid4().hex[:8]}."
    with eventsvm_up(cluster.bootstrap, tmp_path, namespace) as (process, url, log_file):
        # The event topics as `eventsvm up` made them on three brokers: 3 copies, 2 in sync.
        admin = cluster.admin()
        topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(namespace)]
        assert any(t.endswith("instance.requested") for t in topics), topics
        for name, topic in admin.list_topics(timeout=10).topics.items():
            if name in topics:
                assert {len(p.replicas) for p in topic.partitions.values()} == {3}, name
        resources = [ConfigResource("topic", t) for t in topics]
        for resource, future in admin.describe_configs(resources).items():
            assert future.result(timeout=10)["min.insync.replicas"].value == "2", resource

        client, demo, body = demo_without_quota(url)
        per_client = SERVERS // CLIENTS
        creators = [Creator(url, demo, body, count=per_client, prefix=f"c{n}") for n in range(CLIENTS)]
        for creator in creators:
            threading.Thread(target=creator.run, daemon=True).start()

        def accepted() -> int:
            return sum(len(c.accepted) for c in creators)

        wait_for(lambda: accepted() >= SERVERS // 4, 300, "a quarter of the servers accepted before the kill")
        victim = cluster.busiest_leader()
        cluster.kill(victim)
        killed_at = accepted()
        time.sleep(DOWN_S)  # the cloud runs on two brokers meanwhile
        assert process.poll() is None, log_file.read_text()[-3000:]
        cluster.script("start")  # starts the one node that is not running
        for creator in creators:
            wait_for(creator.done.is_set, 900, f"{per_client} servers accepted by {creator.prefix}")
        assert killed_at < SERVERS, "the load was over before the broker died"
        for creator in creators:
            assert creator.other == [], [(r.status_code, r.text) for r in creator.other]
            assert len(creator.accepted) == per_client
        ids = {i for c in creators for i in c.accepted.values()}

        def statuses() -> dict[str, str]:
            listed = client.get("/compute/v2.1/servers/detail", headers={"X-Auth-Token": demo},
                                params={"limit": 1000})
            assert listed.status_code == 200, listed.text
            return {s["id"]: s["status"] for s in listed.json()["servers"]}

        wait_for(lambda: {i for i, s in statuses().items() if s == "ACTIVE"} >= ids, 900,
                 "every accepted server ACTIVE")
        assert statuses() == dict.fromkeys(ids, "ACTIVE"), "a server the clients did not ask for"
        metrics = client.get("/metrics").text
        up = [line for line in metrics.splitlines() if line.startswith("eventsvm_service_up{")]
        assert up and all(line.endswith(" 1.0") for line in up), up
        client.close()
        assert process.poll() is None
    # Read afresh from the cluster: each server passed each stage exactly once.
    models = fold_log(LogConfig(url=f"kafka://{cluster.bootstrap}", namespace=namespace))
    assert set(models.instances.instances) == ids
    for instance_id in ids:
        counts = Counter(action[0] for action in models.instances.instances[instance_id].actions)
        assert all(counts[stage] == 1 for stage in STAGES), (instance_id, counts)
    log_text = log_file.read_text()
    assert " died" not in log_text, [line for line in log_text.splitlines() if " died" in line]
    assert "Assertion" not in log_text, log_text[-3000:]
