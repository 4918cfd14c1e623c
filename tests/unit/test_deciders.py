"""Each service's decide/evolve as plain functions: events in, events out, no log, no threads.
(The spawner's one collaborator is libvirt's own test driver.)"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, TypeVar

import pytest

from consumers import authenticator, resolver, scheduler, spawner
from eventsvm.app.cluster import simulated_host
from eventsvm.app.seed import choose_passwords, seed_events
from eventsvm.events.model import Event, EventType, new_event
from eventsvm.runtime.service import Output, Rejected, Service, StepContext
from eventsvm.virt.compute_host import HostCapacity
from tests.factories import plain_request

S = TypeVar("S")
SEED = seed_events(choose_passwords("admin-pw", "demo-pw"))


def ctx(deps: object = None, partition: int = 0, partitions: int = 1) -> StepContext:
    return StepContext("topic", partition, partitions, deps)


def folded(service: Service[S], events: list[Event]) -> S:
    state = service.initial_state()
    for event in events:
        state = service.evolve(state, event)
    return state


def body_of(kind: EventType, outputs: list[Output] | tuple[Output, ...]) -> dict[str, Any]:
    [output] = outputs
    assert output.event.type == kind, output.event.body
    return output.event.body


def seeded(kind: EventType, name: str) -> dict[str, Any]:
    return next(e.body for e in SEED if e.type == kind and e.body.get("name") == name)


DEMO_USER = seeded(EventType.USER_CREATED, "demo")
DEMO_PROJECT = seeded(EventType.PROJECT_CREATED, "demo")
IMAGE = seeded(EventType.IMAGE_CREATED, "cirros")
PRIVATE = seeded(EventType.NETWORK_CREATED, "private")


def requested(flavor: str = "1", audit_id: str = "audit-1", user: str | None = None) -> Event:
    return new_event(
        EventType.INSTANCE_REQUESTED,
        str(uuid.uuid4()),
        plain_request("vm", flavor, IMAGE["id"], PRIVATE["id"], audit_id),
        user_id=user or DEMO_USER["id"],
        project_id=DEMO_PROJECT["id"],
    )


def host_registered(name: str, slot: int, ram_mb: int = 8192, vcpus: int = 8) -> Event:
    return new_event(
        EventType.HOST_REGISTERED,
        name,
        {
            "name": name,
            "slot": slot,
            "vcpus": vcpus,
            "ram_mb": ram_mb,
            "disk_gb": 100,
            "availability_zone": "nova",
            "enabled": True,
            "cpu_allocation_ratio": 1.0,
            "ram_allocation_ratio": 1.0,
            "disk_allocation_ratio": 1.0,
            "hypervisor_type": "test",
            "hypervisor_uri": "test:///default",
            "cpu_arch": "x86_64",
        },
    )


# -- authenticator -------------------------------------------------------------------------------
def authenticate(event: Event, history: list[Event] = ()) -> list[Output]:  # type: ignore[assignment]
    state = folded(authenticator.SERVICE, [*SEED, *history])
    return list(authenticator.decide(state, event, ctx()))


def test_a_valid_request_is_authenticated_with_its_flavor_and_image() -> None:
    body = body_of(EventType.INSTANCE_AUTHENTICATED, authenticate(requested(flavor="m1.small")))
    assert body["spec"]["flavor"]["ram_mb"] == 2048 and body["spec"]["flavor"]["id"] == "2"
    assert body["spec"]["image_id"] == IMAGE["id"]
    assert "member" in body["roles"]


def test_a_revoked_token_is_refused() -> None:
    revoked = new_event(EventType.TOKEN_REVOKED, "audit-x", {"audit_id": "audit-x", "expires_at": 2**41})
    body = body_of(EventType.INSTANCE_FAILED, authenticate(requested(audit_id="audit-x"), [revoked]))
    assert body["code"] == 401 and body["final"] and "revoked" in body["reason"]


def test_a_token_rescoped_from_a_revoked_one_is_refused() -> None:
    first = {"audit_id": "audit-first", "expires_at": 2**41}
    revoked = new_event(EventType.TOKEN_REVOKED, "audit-first", first)
    request = requested(audit_id="audit-child")
    request.body["token_chain_audit_id"] = "audit-first"
    body = body_of(EventType.INSTANCE_FAILED, authenticate(request, [revoked]))
    assert body["code"] == 401 and "revoked" in body["reason"]


def test_an_unknown_flavor_is_refused() -> None:
    body = body_of(EventType.INSTANCE_FAILED, authenticate(requested(flavor="m1.enormous")))
    assert body["code"] == 400 and "m1.enormous" in body["reason"]


def test_quota_counts_live_instances_and_frees_them_on_delete() -> None:
    quota = new_event(
        EventType.QUOTA_SET,
        DEMO_PROJECT["id"],
        {"project_id": DEMO_PROJECT["id"], "instances": 1, "cores": -1, "ram_mb": -1},
    )
    first = requested()
    [ok] = authenticate(first, [quota])
    refused = body_of(EventType.INSTANCE_FAILED, authenticate(requested(), [quota, ok.event]))
    assert refused["code"] == 403 and "Quota exceeded for instances" in refused["reason"]
    gone = new_event(
        EventType.INSTANCE_DELETED,
        first.aggregate_id,
        {"host": None, "terminated_at": 1, "stage": "resolver"},
        cause=first,
    )
    body_of(EventType.INSTANCE_AUTHENTICATED, authenticate(requested(), [quota, ok.event, gone]))


def test_a_request_deleted_before_it_was_authenticated_is_dropped() -> None:
    event = requested()
    gone = new_event(
        EventType.INSTANCE_DELETED,
        event.aggregate_id,
        {"host": None, "terminated_at": 1, "stage": "resolver"},
    )
    assert authenticate(event, [gone]) == []


def test_a_request_for_a_malformed_instance_id_is_rejected() -> None:
    event = requested()
    event.aggregate_id = "not-a-uuid"
    with pytest.raises(Rejected):
        authenticate(event)


# -- scheduler -----------------------------------------------------------------------------------
def authenticated(flavor: str = "1") -> Event:
    [output] = authenticate(requested(flavor=flavor))
    return output.event


def schedule(event: Event, history: list[Event], max_attempts: int = 3) -> list[Output]:
    state = folded(scheduler.SERVICE, history)
    return list(scheduler.decide(state, event, ctx(scheduler.SchedulerSettings(max_attempts=max_attempts))))


def test_the_host_with_most_free_ram_wins_and_the_others_are_alternates() -> None:
    hosts = [
        host_registered("small", 0, ram_mb=4096),
        host_registered("big", 1, ram_mb=16384),
        host_registered("mid", 2, ram_mb=8192),
    ]
    body = body_of(EventType.INSTANCE_SCHEDULED, schedule(authenticated(), hosts))
    assert body["host"] == "big" and body["alternates"] == ["mid", "small"]
    assert body["attempt"] == 1 and body["claim"]["ram_mb"] == 512


def test_claims_fill_a_host_and_no_valid_host_explains_why() -> None:
    first = authenticated(flavor="3")  # 4096 MB
    placed = schedule(first, [host_registered("only", 0, ram_mb=4096)])
    body = body_of(
        EventType.INSTANCE_FAILED,
        schedule(authenticated(flavor="3"), [host_registered("only", 0, ram_mb=4096), placed[0].event]),
    )
    assert body["final"] and "No valid host was found" in body["reason"]
    assert "RamFilter: 1 -> 0" in body["details"] and "needs 4096 MB" in body["details"]


def test_a_deletion_releases_the_claim() -> None:
    first = authenticated(flavor="3")
    hosts = [host_registered("only", 0, ram_mb=4096)]
    placed = schedule(first, hosts)[0].event
    gone = new_event(
        EventType.INSTANCE_DELETED,
        first.aggregate_id,
        {"host": "only", "terminated_at": 1, "stage": "spawner"},
        cause=placed,
    )
    body_of(EventType.INSTANCE_SCHEDULED, schedule(authenticated(flavor="3"), [*hosts, placed, gone]))


def spawn_failed(placed: Event, host: str, attempt: int, alternates: list[str]) -> Event:
    return new_event(
        EventType.INSTANCE_FAILED,
        placed.aggregate_id,
        {
            "stage": "spawn",
            "reason": "disk on fire",
            "code": 500,
            "retryable": True,
            "final": False,
            "host": host,
            "attempt": attempt,
            "details": None,
            "alternates": alternates,
            "spec": placed.body["spec"],
        },
        cause=placed,
    )


def test_a_retryable_failure_goes_to_the_next_alternate_then_ends_in_error() -> None:
    hosts = [
        host_registered("a", 0, ram_mb=16384),
        host_registered("b", 1, ram_mb=8192),
        host_registered("c", 2, ram_mb=4096),
    ]
    placed = schedule(authenticated(), hosts)[0].event
    assert placed.body["host"] == "a"
    failure = spawn_failed(placed, "a", 1, placed.body["alternates"])
    again = body_of(EventType.INSTANCE_SCHEDULED, schedule(failure, [*hosts, placed, failure]))
    assert again["host"] == "b" and again["attempt"] == 2 and again["alternates"] == ["c"]
    last = spawn_failed(placed, "c", 3, [])
    final = body_of(EventType.INSTANCE_FAILED, schedule(last, [*hosts, placed, last]))
    assert final["final"] and "Exceeded maximum number of retries" in final["reason"]
    assert "disk on fire" in final["details"]


def test_an_impossible_flavor_is_rejected_not_scheduled() -> None:
    event = authenticated()
    event.body["spec"]["flavor"]["vcpus"] = 0
    with pytest.raises(Rejected):
        schedule(event, [host_registered("a", 0)])


# -- resolver ------------------------------------------------------------------------------------
def scheduled_on(host: str, hosts: list[Event]) -> Event:
    event = authenticated()
    return schedule(event, hosts)[0].event if host else event


def resolve(event: Event, history: list[Event], partition: int = 0, partitions: int = 1) -> list[Output]:
    state = folded(resolver.SERVICE, [*SEED, *history])
    return list(resolver.decide(state, event, ctx(partition=partition, partitions=partitions)))


def test_a_scheduled_instance_gets_a_port_and_is_routed_to_its_host() -> None:
    hosts = [host_registered("h0", 0), host_registered("h1", 1, ram_mb=65536)]
    placed = scheduled_on("h1", hosts)
    [output] = resolve(placed, hosts)
    body = body_of(EventType.INSTANCE_RESOURCES_RESOLVED, [output])
    assert output.route == 1
    [port] = body["ports"]
    assert port["ip_address"] == "10.0.0.2" and port["mac_address"].startswith("fa:16:3e:")
    assert body["image"]["id"] == IMAGE["id"]


def test_resolvers_on_different_partitions_never_hand_out_the_same_address() -> None:
    hosts = [host_registered("h0", 0)]
    addresses = set()
    for partition in range(4):
        history: list[Event] = list(hosts)
        for _ in range(5):
            [output] = resolve(scheduled_on("h0", hosts), history, partition=partition, partitions=4)
            history.append(output.event)
            addresses.add(output.event.body["ports"][0]["ip_address"])
    assert len(addresses) == 20


def test_a_rescheduled_instance_keeps_its_port() -> None:
    hosts = [host_registered("h0", 0), host_registered("h1", 1)]
    placed = scheduled_on("h0", hosts)
    first = resolve(placed, hosts)[0].event
    moved = new_event(
        EventType.INSTANCE_SCHEDULED, placed.aggregate_id, {**placed.body, "host": "h1", "attempt": 2}
    )
    [output] = resolve(moved, [*hosts, first])
    assert output.event.body["ports"] == first.body["ports"] and output.route == 1


def test_a_delete_is_routed_to_the_host_or_completed_locally() -> None:
    hosts = [host_registered("h0", 0), host_registered("h1", 1)]
    placed = scheduled_on("h0", hosts)
    resolved = resolve(placed, hosts)[0].event
    delete = new_event(EventType.INSTANCE_DELETE_REQUESTED, placed.aggregate_id, {"host": None})
    [routed] = resolve(delete, [*hosts, resolved])
    assert body_of(EventType.INSTANCE_DELETE_DISPATCHED, [routed])["host"] == "h0"
    never_placed = new_event(EventType.INSTANCE_DELETE_REQUESTED, str(uuid.uuid4()), {"host": None})
    assert body_of(EventType.INSTANCE_DELETED, resolve(never_placed, hosts))["stage"] == "resolver"


def test_work_for_an_unregistered_host_is_rejected() -> None:
    hosts = [host_registered("h0", 0)]
    placed = scheduled_on("h0", hosts)
    placed.body["host"] = "ghost"
    with pytest.raises(Rejected):
        resolve(placed, hosts)


# -- spawner -------------------------------------------------------------------------------------
@pytest.fixture
def compute(tmp_path: Path) -> Any:
    host = simulated_host(
        tmp_path, "h0", 0, HostCapacity(vcpus=4, ram_mb=1024, disk_gb=10, cpu_allocation_ratio=1.0)
    )
    yield host
    host.hypervisor.close()


def resolved_for(host: str = "h0", flavor: str = "1") -> Event:
    hosts = [host_registered(host, 0, ram_mb=65536)]
    event = authenticated(flavor=flavor)
    placed = schedule(event, hosts)[0].event
    return resolve(placed, hosts)[0].event


def spawn(compute: Any, event: Event, history: list[Event] = ()) -> list[Output]:  # type: ignore[assignment]
    service = spawner.service_for(compute.name)
    state = folded(service, list(history))
    return list(service.decide(state, event, ctx(compute)))


def test_a_resolved_instance_becomes_one_running_domain(compute: Any) -> None:
    event = resolved_for()
    [output] = spawn(compute, event)
    body = body_of(EventType.INSTANCE_SPAWNED, [output])
    assert body["host"] == "h0" and body["power_state"] == 1
    assert compute.hypervisor.list_instances() == [event.aggregate_id]
    # redelivered before its `spawned` was committed: the same domain, reported again
    body_of(EventType.INSTANCE_SPAWNED, spawn(compute, event))
    # redelivered after: nothing at all
    assert spawn(compute, event, [output.event]) == []
    assert compute.hypervisor.list_instances() == [event.aggregate_id]


def test_a_claim_that_no_longer_fits_is_refused_for_rescheduling(compute: Any) -> None:
    first = spawn(compute, resolved_for())[0].event  # 512 of 1024 MB
    second = spawn(compute, resolved_for(), [first])[0].event
    refused = body_of(EventType.INSTANCE_FAILED, spawn(compute, resolved_for(), [first, second]))
    assert refused["stage"] == "claim" and refused["retryable"] and refused["spec"] is not None
    assert "Free memory" in refused["reason"]


VOLUME = {"id": str(uuid.uuid4()), "name": "root", "size_gb": 40, "owner": DEMO_PROJECT["id"],
          "status": "available"}


def large_root(event: Event, boot_from_volume: bool) -> Event:
    """`event` for a flavor whose 40 GB root disk is more than the host's 10 GB."""
    spec = event.body["spec"]
    spec["flavor"] = {**spec["flavor"], "disk_gb": 40}
    if boot_from_volume:
        spec["block_devices"] = [{"source_type": "volume", "destination_type": "volume", "uuid": VOLUME["id"],
                                  "volume_size": None, "boot_index": 0, "delete_on_termination": False}]
    return event


def test_the_spawner_holds_exactly_the_claim_the_scheduler_made(compute: Any) -> None:
    hosts = [host_registered("h0", 0, ram_mb=65536),
             new_event(EventType.VOLUME_CREATED, VOLUME["id"], VOLUME)]
    placed = schedule(large_root(authenticated(), boot_from_volume=True), hosts)[0].event
    assert placed.body["claim"]["disk_gb"] == 0  # the root disk lives in cinder
    event = resolve(placed, hosts)[0].event
    assert event.body["claim"] == placed.body["claim"]
    outputs = spawn(compute, event)
    spawned = body_of(EventType.INSTANCE_SPAWNED, outputs[:1])
    assert spawned["claim"] == placed.body["claim"]
    # the root volume is the guest's disk and is reported attached, for the catalog to show it in-use
    attached = body_of(EventType.VOLUME_ATTACHED, outputs[1:])
    assert (attached["volume_id"], attached["device"]) == (VOLUME["id"], "/dev/vdb")
    assert "vdb" in compute.hypervisor.disk_targets(event.aggregate_id)
    state = folded(spawner.service_for(compute.name), [spawn(compute, event)[0].event])
    assert state.used(compute.name) == (1, 512, 0)


def test_a_resolved_event_without_a_claim_is_checked_against_its_spec(compute: Any) -> None:
    """Events written before the claim travelled (schema v1) fall back to the rule itself."""
    from_volume = large_root(resolved_for(), boot_from_volume=True)
    from_volume.body["claim"] = None
    body_of(EventType.INSTANCE_SPAWNED, spawn(compute, from_volume))
    from_image = large_root(resolved_for(), boot_from_volume=False)
    from_image.body["claim"] = None
    refused = body_of(EventType.INSTANCE_FAILED, spawn(compute, from_image))
    assert refused["stage"] == "claim" and "Free disk 10 GB < requested 40 GB" in refused["reason"]


def test_work_for_another_host_is_not_ours(compute: Any) -> None:
    assert spawn(compute, resolved_for(host="elsewhere")) == []
    assert compute.hypervisor.list_instances() == []


def test_a_dispatched_delete_destroys_the_domain(compute: Any) -> None:
    event = resolved_for()
    spawned = spawn(compute, event)[0].event
    delete = new_event(
        EventType.INSTANCE_DELETE_DISPATCHED,
        event.aggregate_id,
        {"host": "h0", "domain_name": "instance-x"},
        cause=spawned,
    )
    body = body_of(EventType.INSTANCE_DELETED, spawn(compute, delete, [spawned]))
    assert body["host"] == "h0" and compute.hypervisor.list_instances() == []


def test_a_host_under_a_relative_data_dir_still_spawns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `make run` passes --data-dir ./data; libvirt's schema refuses relative console-log paths
    monkeypatch.chdir(tmp_path)
    host = simulated_host(Path("data"), "h0", 0, HostCapacity())
    try:
        body_of(EventType.INSTANCE_SPAWNED, spawn(host, resolved_for()))
    finally:
        host.hypervisor.close()
