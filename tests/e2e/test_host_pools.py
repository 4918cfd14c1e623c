"""More compute hosts than partitions: the hosts whose work shares partitions are served by one
spawner (a pool), so a cloud of thousands of simulated hosts is a handful of readers. Each host
still claims, spawns and signs as itself: every server's guest is on the host the API names, no
host holds more than it has, the cloud's readers trust every host's events, and a deletion leaves
no guest behind. Then the same through `eventsvm up --processes`, a child per pool."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx

from eventsvm.virt.compute_host import HostCapacity
from tests.e2e.conftest import CloudFactory, wait_quiet
from tests.e2e.test_backpressure import _project
from tests.processes import stop
from tests.up_children import TIMEOUT_S, start_up

FOUR_TINY = HostCapacity(vcpus=4, ram_mb=8192, disk_gb=200, cpu_allocation_ratio=1.0)


def test_hosts_sharing_partitions_are_one_spawner_and_each_keeps_its_own_claims(
        make_cloud: CloudFactory) -> None:
    cloud = make_cloud(hosts=5, partitions=2, capacity=FOUR_TINY)
    spawners = sorted(r.service.name for r in cloud.cluster.runners if r.service.name.startswith("spawner."))
    assert spawners == ["spawner.pool-0", "spawner.pool-1"]
    cloud.unlimited_quota()
    ids = [cloud.submit(f"pooled-{n}") for n in range(24)]  # room for 20: 4 m1.tiny on each of 5
    servers = cloud.wait_for(ids, {"ACTIVE", "ERROR"}, timeout=120)
    active = [s for s in servers.values() if s.status == "ACTIVE"]
    assert len(active) == 20, Counter(s.status for s in servers.values())
    assert all("No valid host" in (s.fault or {}).get("message", "") for s in servers.values()
               if s.status == "ERROR")
    hypervisors = {h.name: h.hypervisor for h in cloud.cluster.hosts}
    for server in active:
        holding = [name for name, hv in hypervisors.items() if server.id in hv.list_instances()]
        assert holding == [server.host], f"{server.id} on {holding}, the API says {server.host}"
    assert Counter(s.host for s in active) == {f"compute-{n}": 4 for n in range(1, 6)}

    for server in active:
        cloud.delete(server.id)
    cloud.wait_for([s.id for s in active], {"DELETED"}, timeout=120)
    wait_quiet(cloud)
    assert {name: hv.list_instances() for name, hv in hypervisors.items()} == {
        name: [] for name in hypervisors}
    # what the hosts freed is theirs again: a full cloud's worth boots anew
    again = [cloud.submit(f"again-{n}") for n in range(20)]
    assert {s.status for s in cloud.wait_for(again, {"ACTIVE", "ERROR"}, timeout=120).values()} == {"ACTIVE"}


def test_up_processes_runs_a_child_per_pool_and_their_hosts_boot_servers(tmp_path: Path) -> None:
    cloud = start_up(tmp_path, "--hosts", "6", "--allocator", "auto")  # whatever the environment says
    try:
        children = cloud.children()
        # four partitions: compute-1 and -5 share the first, -2 and -6 the second
        assert {"pool-0", "pool-1", "compute-3", "compute-4"} <= set(children), sorted(children)
        assert not {"compute-1", "compute-2", "compute-5", "compute-6"} & set(children)
        # the default C allocator when jemalloc is installed, as `make install` does
        # (scripts/install-debs.sh): every child has it mapped, and `up` says so
        for name, row in children.items():
            maps = Path(f"/proc/{row['pid']}/maps").read_text()
            assert "libjemalloc" in maps, f"{name} is on glibc's malloc"
        assert "(C allocator: jemalloc)" in cloud.output.read_text()
        demo = _project(cloud.url, "demo", "private")
        headers = {"X-Auth-Token": demo.token}
        ids = []
        for n in range(8):
            reply = httpx.post(f"{cloud.url}/compute/v2.1/servers", headers=headers, timeout=TIMEOUT_S,
                               json={"server": {**demo.server, "name": f"pooled-{n}"}})
            assert reply.status_code == 202, reply.text
            ids.append(reply.json()["server"]["id"])
        deadline, statuses = time.monotonic() + 120, {}
        while time.monotonic() < deadline:
            listed = httpx.get(f"{cloud.url}/compute/v2.1/servers/detail", headers=headers,
                               timeout=TIMEOUT_S).json()["servers"]
            statuses = {s["id"]: s["status"] for s in listed if s["id"] in ids}
            if len(statuses) == len(ids) and set(statuses.values()) <= {"ACTIVE", "ERROR"}:
                break
            time.sleep(0.5)
        assert set(statuses.values()) == {"ACTIVE"}, f"{statuses}\n{cloud.tail()}"
        admin = {"X-Auth-Token": _project(cloud.url, "admin", "public").token}
        listed = httpx.get(f"{cloud.url}/compute/v2.1/servers/detail?all_tenants=1", headers=admin,
                           timeout=TIMEOUT_S).json()["servers"]
        hosts = {s["OS-EXT-SRV-ATTR:host"] for s in listed if s["id"] in ids}
        # the weighers spread eight servers over six hosts: the pools' hosts get theirs
        assert hosts & {"compute-1", "compute-2", "compute-5", "compute-6"}, hosts
    finally:
        stop(cloud.process)
