"""The boot flow end to end on both engines: requested → authenticated → scheduled →
resources-resolved → spawned, with every service running, as a user of the cloud sees it."""

from __future__ import annotations

from collections import Counter

from eventsvm.virt.compute_host import HostCapacity
from tests.e2e.conftest import STAGES, CloudFactory, fold_log, in_flight, log_events, wait_quiet


def test_fifty_servers_reach_active_with_distinct_addresses(make_cloud: CloudFactory) -> None:
    cloud = make_cloud(hosts=2)
    cloud.unlimited_quota()
    ids = [cloud.submit(f"vm-{n}") for n in range(50)]
    servers = cloud.wait_for(ids, {"ACTIVE", "ERROR"}, timeout=120)
    assert {s.status for s in servers.values()} == {"ACTIVE"}, {s.id: s.fault for s in servers.values()}
    addresses = [p["ip_address"] for s in servers.values() for p in s.ports]
    macs = [p["mac_address"] for s in servers.values() for p in s.ports]
    assert len(addresses) == 50 and len(set(addresses)) == 50
    assert len(set(macs)) == 50
    assert all(a.startswith("10.0.0.") for a in addresses)
    assert {s.host for s in servers.values()} <= {"compute-1", "compute-2"}
    domains = sum(len(h.hypervisor.list_instances()) for h in cloud.cluster.hosts)
    assert domains == 50


def test_capacity_exhaustion_ends_in_error_with_the_filter_explanation(make_cloud: CloudFactory) -> None:
    small = HostCapacity(vcpus=2, ram_mb=2048, disk_gb=40)
    cloud = make_cloud(hosts=3, capacity=small)
    (server_id,) = [cloud.submit("too-big", flavor="3")]  # m1.medium: 4096 MB
    server = cloud.wait_for([server_id], {"ERROR", "ACTIVE"})[server_id]
    assert server.status == "ERROR"
    assert server.fault is not None
    message = server.fault["message"] + " " + server.fault["details"]
    assert "No valid host was found" in message
    assert "RamFilter: 3 -> 0" in message
    assert "4096 MB" in message and "2048 MB" in message


def test_spawn_failure_on_one_host_is_rescheduled_onto_another(make_cloud: CloudFactory) -> None:
    cloud = make_cloud(hosts=2, broken_hosts={"compute-1": "simulated hypervisor fault"})
    ids = [cloud.submit(f"retry-{n}") for n in range(6)]
    servers = cloud.wait_for(ids, {"ACTIVE", "ERROR"})
    assert {s.status for s in servers.values()} == {"ACTIVE"}
    assert {s.host for s in servers.values()} == {"compute-2"}
    rescheduled = [s for s in servers.values() if s.attempt > 1]
    assert rescheduled, "the weighers spread load, so some build must have tried compute-1 first"
    models = fold_log(cloud.options.log)
    for server in rescheduled:
        timeline = log_events(models, server.id)
        assert "instance.failed" in timeline
        assert timeline.count("instance.scheduled") == 2


def test_a_server_fails_after_every_alternate_failed(make_cloud: CloudFactory) -> None:
    cloud = make_cloud(hosts=2, broken_hosts={"compute-1": "disk on fire", "compute-2": "disk on fire"})
    (server_id,) = [cloud.submit("doomed")]
    server = cloud.wait_for([server_id], {"ERROR", "ACTIVE"})[server_id]
    assert server.status == "ERROR"
    assert server.fault is not None and "Exceeded maximum number of retries" in server.fault["message"]
    assert "disk on fire" in server.fault["details"]


def test_delete_frees_capacity_and_address_so_a_new_server_fits(make_cloud: CloudFactory) -> None:
    one_small_server = HostCapacity(vcpus=1, ram_mb=2048, disk_gb=20, cpu_allocation_ratio=1.0)
    cloud = make_cloud(hosts=1, capacity=one_small_server, partitions=1)
    first = cloud.submit("first", flavor="2")
    server = cloud.wait_for([first], {"ACTIVE", "ERROR"})[first]
    assert server.status == "ACTIVE"
    address = server.ports[0]["ip_address"]
    blocked = cloud.submit("blocked", flavor="2")
    assert cloud.wait_for([blocked], {"ACTIVE", "ERROR"})[blocked].status == "ERROR"
    cloud.delete(first)
    assert cloud.wait_for([first], {"DELETED"})[first].terminated_at is not None
    assert cloud.cluster.hosts[0].hypervisor.list_instances() == []
    again = cloud.submit("again", flavor="2")
    server = cloud.wait_for([again], {"ACTIVE", "ERROR"})[again]
    assert server.status == "ACTIVE"
    assert server.ports[0]["ip_address"] == address


def test_delete_before_the_server_reaches_a_host_completes(make_cloud: CloudFactory) -> None:
    cloud = make_cloud(hosts=1)
    ids = [cloud.submit(f"short-lived-{n}") for n in range(5)]
    for instance_id in ids:
        cloud.delete(instance_id)
    cloud.wait_for(ids, {"DELETED"})
    wait_quiet(cloud)  # no spawn of theirs still on its way
    assert cloud.cluster.hosts[0].hypervisor.list_instances() == []
    assert all(cloud.instance(i).status == "DELETED" for i in ids)


def test_restarting_every_service_mid_flight_loses_and_duplicates_nothing(make_cloud: CloudFactory) -> None:
    cloud = make_cloud(hosts=2)
    cloud.unlimited_quota()
    ids: list[str] = []
    caught: list[str] = []
    # Restart once the read model shows a server between two stages; the log as it stood while
    # nothing ran proves that some server really was (the read model alone could be behind it,
    # and on a fast engine every server may be done by the time the services stop: then another
    # burst, up to five).
    for burst in range(5):
        ids += [cloud.submit(f"flight-{burst}-{n}") for n in range(20)]
        went = cloud.readmodel.wait_until(lambda models: bool(in_flight(models)), 60)
        assert went, "nothing went in flight"
        stopped = cloud.restart()
        caught = in_flight(stopped)
        if caught:
            break
    ids += [cloud.submit(f"flight-after-{n}") for n in range(10)]
    cloud.restart()
    servers = cloud.wait_for(ids, {"ACTIVE", "ERROR"}, timeout=120)
    assert {s.status for s in servers.values()} == {"ACTIVE"}
    assert caught, "the restart found every server either untouched or done: nothing was in flight"
    wait_quiet(cloud)
    models = fold_log(cloud.options.log)
    for instance_id in ids:
        counts = Counter(log_events(models, instance_id))
        for stage in STAGES:
            assert counts[stage] == 1, (instance_id, counts)
