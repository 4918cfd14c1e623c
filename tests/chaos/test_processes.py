"""Real processes: two of a service split the work and never over-commit or double-allocate;
SIGTERM exits cleanly; SIGKILL mid-flight loses and duplicates nothing."""

from __future__ import annotations

from collections import Counter

from eventsvm.app.registry import PIPELINE, SERVICES
from tests.chaos.conftest import ProcessCloud
from tests.e2e.conftest import STAGES, Inputs, fold_log, in_flight, spawner_reading, wait_log_quiet

SMALL_HOST = "vcpus=2,ram=4096,disk=100"


def start_pipeline(
    cloud: ProcessCloud, schedulers: int = 1, resolvers: int = 1, host_capacity: str = ""
) -> None:
    cloud.start("authenticator", "authenticator")
    for n in range(schedulers):
        cloud.start(f"scheduler-{n}", "scheduler")
    for n in range(resolvers):
        cloud.start(f"resolver-{n}", "resolver")
    for host in ("compute-1", "compute-2"):
        extra = ["--host-capacity", host_capacity] if host_capacity else []
        cloud.start(host, "spawner", "--host", host, *extra)


def pipeline_inputs(cloud: ProcessCloud) -> Inputs:
    """What start_pipeline's services read (billing does not run here)."""
    log_ = cloud.driver.readmodel.log
    inputs: Inputs = []
    for name in PIPELINE:
        if name != "billing":
            service = SERVICES[name].service("")
            inputs += [(f"eventsvm.{service.name}", str(t), list(range(log_.partitions(str(t)))))
                       for t in service.inputs]
    for host in ("compute-1", "compute-2"):
        inputs += spawner_reading(log_, host, int(cloud.driver.readmodel.models.hosts[host]["slot"]))
    return inputs


def test_two_schedulers_and_two_resolvers_never_overcommit_a_host_or_reuse_an_address(
    process_cloud: ProcessCloud,
) -> None:
    start_pipeline(process_cloud, schedulers=2, resolvers=2, host_capacity=SMALL_HOST)
    driver = process_cloud.driver
    ids = [driver.submit(f"crowd-{n}", flavor="2") for n in range(12)]  # m1.small, 2048 MB: 2 fit per host
    servers = driver.wait_for(ids, {"ACTIVE", "ERROR"}, timeout=180)
    active = [s for s in servers.values() if s.status == "ACTIVE"]
    ram_by_host = Counter()
    for server in active:
        assert server.flavor is not None
        ram_by_host[server.host] += server.flavor["ram_mb"]
    assert all(ram <= 4096 for ram in ram_by_host.values()), ram_by_host
    assert len(active) == 4, {s.id: (s.status, s.host, s.fault) for s in servers.values()}
    addresses = [p["ip_address"] for s in active for p in s.ports]
    assert len(addresses) == len(set(addresses))
    refused = [s for s in servers.values() if s.status == "ERROR"]
    assert all(
        s.fault and ("No valid host" in s.fault["message"] or "retries" in s.fault["message"])
        for s in refused
    )
    for label in list(process_cloud.processes):
        assert process_cloud.terminate(label) == 0, f"{label} did not exit cleanly on SIGTERM"


def test_killing_every_service_mid_flight_loses_and_duplicates_nothing(process_cloud: ProcessCloud) -> None:
    start_pipeline(process_cloud)
    driver = process_cloud.driver
    # enough servers that some are still between stages when the five kills land (with 15, a
    # faster pipeline once had them all ACTIVE by then)
    ids = [driver.submit(f"survivor-{n}") for n in range(60)]
    # Kill once the read model shows a server between two stages; the log read afresh after the
    # kill, when nothing can commit any more, proves that some server really was.
    assert driver.readmodel.wait_until(lambda models: bool(in_flight(models)), 120), "nothing went in flight"
    for label in ("authenticator", "scheduler-0", "resolver-0", "compute-1", "compute-2"):
        process_cloud.kill(label)
    caught = in_flight(fold_log(process_cloud.log_config))
    ids += [driver.submit(f"survivor-{n}") for n in range(60, 70)]
    start_pipeline(process_cloud)
    servers = driver.wait_for(ids, {"ACTIVE", "ERROR"}, timeout=180)
    assert {s.status for s in servers.values()} == {"ACTIVE"}, {s.id: s.fault for s in servers.values()}
    assert caught, "the kill found every server either untouched or done: nothing was in flight"
    wait_log_quiet(process_cloud.log_config, pipeline_inputs(process_cloud))  # no duplicate still to come
    models = fold_log(process_cloud.log_config)
    for instance_id in ids:
        counts = Counter(action[0] for action in models.instances.instances[instance_id].actions)
        assert all(counts[stage] == 1 for stage in STAGES), (instance_id, counts)
