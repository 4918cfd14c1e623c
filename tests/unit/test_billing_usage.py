"""Usage as a billing team reads it: nova's simple-tenant-usage numbers, and the billing decider."""

from __future__ import annotations

import dataclasses
import random

import pytest

from consumers import billing as service
from eventsvm.events.model import Event, EventType, Topic, new_event
from eventsvm.projections.billing import tenant_usage, usage_rows
from eventsvm.runtime.service import StepContext
from eventsvm.state.usage import MS_PER_HOUR, BillingLedger, UsageLedger, evolve_ledger, fold_instance_event
from tests.factories import move_body

T0 = 1_800_000_000_000  # an arbitrary period start, in ms
H = MS_PER_HOUR
SMALL = {"id": "2", "name": "m1.small", "vcpus": 1, "ram_mb": 2048, "disk_gb": 20, "ephemeral_gb": 0,
         "swap_mb": 0, "extra_specs": {}}
LARGE = {"id": "4", "name": "m1.large", "vcpus": 4, "ram_mb": 8192, "disk_gb": 80, "ephemeral_gb": 10,
         "swap_mb": 512, "extra_specs": {}}
CTX = StepContext("eventsvm.instance.spawned", 0, 1)


def spawned(instance_id: str, at: int, flavor: dict = SMALL, project: str = "p1") -> Event:
    body = {"host": "compute-1", "domain_name": "instance-1", "power_state": 1, "launched_at": at,
            "attempt": 1, "flavor": flavor, "addresses": []}
    return new_event(EventType.INSTANCE_SPAWNED, instance_id, body, project_id=project, user_id="u1",
                     sequence=5, occurred_at=at)


def deleted(instance_id: str, at: int, project: str = "admin-project") -> Event:
    # an admin may delete: the deleted event's actor is not the owner
    return new_event(EventType.INSTANCE_DELETED, instance_id, {"host": "compute-1", "terminated_at": at,
                                                                "stage": "spawner"},
                     project_id=project, sequence=7, occurred_at=at)


def ledger_of(*events: Event) -> UsageLedger:
    ledger = UsageLedger()
    for event in events:
        fold_instance_event(ledger, event)
    return ledger


def test_running_deleted_clipped_and_never_spawned_instances_cost_what_nova_charges() -> None:
    ledger = ledger_of(
        spawned("running", T0 + 2 * H),  # runs until "now", one hour before the period ends
        spawned("gone", T0 + 1 * H, LARGE), deleted("gone", T0 + 4 * H),
        spawned("before", T0 - 5 * H), deleted("before", T0 + H // 2),  # clipped at the period start
        spawned("old", T0 - 9 * H), deleted("old", T0 - 8 * H),  # ended before the period
        deleted("never-spawned", T0 + 3 * H),
        spawned("other", T0, project="p2"),
    )
    (p1, p2) = tenant_usage(ledger, T0, T0 + 10 * H, now=T0 + 9 * H)
    assert p1["tenant_id"] == "p1" and p2["tenant_id"] == "p2"
    servers = {s["instance_id"]: s for s in p1["server_usages"]}
    assert set(servers) == {"running", "gone", "before"}
    assert servers["running"]["hours"] == 7.0 and servers["running"]["ended_at"] is None
    assert servers["running"]["state"] == "active" and servers["running"]["uptime"] == 7 * 3600
    assert servers["gone"]["hours"] == 3.0 and servers["gone"]["state"] == "terminated"
    assert servers["gone"]["local_gb"] == 90  # root + ephemeral, as nova counts it
    assert servers["before"]["hours"] == 0.5
    assert p1["total_hours"] == 10.5
    assert p1["total_vcpus_usage"] == 7 * 1 + 3 * 4 + 0.5 * 1
    assert p1["total_memory_mb_usage"] == 7 * 2048 + 3 * 8192 + 0.5 * 2048
    assert p1["total_local_gb_usage"] == 7 * 20 + 3 * 90 + 0.5 * 20
    assert p2["total_hours"] == 9.0
    assert p1["start"].startswith("2027-01-15T08:00:00") and p1["stop"].startswith("2027-01-15T18:00:00")


def test_one_project_without_server_detail_and_a_backwards_period_is_refused() -> None:
    ledger = ledger_of(spawned("a", T0), spawned("b", T0, project="p2"))
    (only,) = tenant_usage(ledger, T0, T0 + H, project_id="p2", detailed=False, now=T0 + 2 * H)
    assert only["tenant_id"] == "p2" and "server_usages" not in only and only["total_hours"] == 1.0
    assert tenant_usage(ledger, T0, T0 + H, project_id="nobody") == []
    with pytest.raises(ValueError, match="start time"):
        tenant_usage(ledger, T0 + H, T0)


def test_server_names_and_states_come_from_the_instance_lookup() -> None:
    ledger = ledger_of(spawned("a", T0))
    (usage,) = tenant_usage(ledger, T0, T0 + H, now=T0 + H, instance_info=lambda _id: ("web-1", "stopped"))
    assert usage["server_usages"][0]["name"] == "web-1" and usage["server_usages"][0]["state"] == "stopped"


def run_decider(ledger: UsageLedger, event: Event) -> list[Event]:
    outputs = [o.event for o in service.decide(ledger, event, CTX)]
    for out in outputs:
        evolve_ledger(ledger, out)
    return outputs


def test_the_billing_decider_writes_one_record_per_spawn_and_delete_however_often_they_arrive() -> None:
    ledger = UsageLedger()
    start, stop = spawned("a", T0), deleted("a", T0 + 2 * H)
    (opened,) = run_decider(ledger, start)
    assert opened.type == EventType.USAGE_OPENED and opened.causation_id == start.event_id
    assert opened.project_id == "p1" and opened.body["flavor"]["name"] == "m1.small"
    assert run_decider(ledger, start) == []  # redelivered
    (closed,) = run_decider(ledger, stop)
    assert closed.type == EventType.USAGE_CLOSED and closed.body["ended_at"] == T0 + 2 * H
    assert run_decider(ledger, stop) == []
    assert ledger.records == 2
    assert ledger.usages == ledger_of(start, stop).usages


def test_a_delete_read_before_its_spawn_still_bills_the_right_owner_and_period() -> None:
    ledger = UsageLedger()
    run_decider(ledger, deleted("a", T0 + 3 * H))
    assert tenant_usage(ledger, T0, T0 + 4 * H) == []  # not billable until it is known to have run
    run_decider(ledger, spawned("a", T0 + H))
    (usage,) = tenant_usage(ledger, T0, T0 + 4 * H, now=T0 + 10 * H)
    assert usage["tenant_id"] == "p1" and usage["total_hours"] == 2.0


def test_export_rows_by_flavor_and_by_project_sum_the_instances_and_name_the_project() -> None:
    ledger = ledger_of(spawned("a", T0), spawned("b", T0 + H), spawned("c", T0, LARGE), deleted("c", T0 + H))
    names = {"p1": "demo"}
    by_flavor = usage_rows(ledger, T0, T0 + 4 * H, by="flavor", now=T0 + 4 * H, project_names=names)
    assert [(r["flavor"], r["instances"], r["hours"], r["vcpu_hours"]) for r in by_flavor] == [
        ("m1.large", 1, 1.0, 4.0), ("m1.small", 2, 7.0, 7.0)]
    (project,) = usage_rows(ledger, T0, T0 + 4 * H, by="project", now=T0 + 4 * H, project_names=names)
    assert project == {"project_id": "p1", "project_name": "demo", "instances": 3, "hours": 8.0,
                       "vcpu_hours": 11.0, "memory_mb_hours": 7 * 2048 + 8192.0,
                       "local_gb_hours": 7 * 20 + 90.0}
    per_instance = usage_rows(ledger, T0, T0 + 4 * H, now=T0 + 4 * H, instance_names={"a": "web"})
    assert [(r["instance_id"], r["instance_name"]) for r in per_instance][:1] == [("a", "web")]
    with pytest.raises(ValueError):
        usage_rows(ledger, T0, T0 + H, by="colour")


def confirmed(instance_id: str, at: int, flavor: dict = LARGE) -> Event:
    body = move_body(random.Random(5), action="confirmResize", step="compute_confirm_resize", host=None,
                     dest_host="compute-2", flavor=flavor, old_flavor=SMALL, vm_state="active",
                     task_state=None)
    return new_event(EventType.INSTANCE_MOVE_STEP, instance_id, body, project_id="p1", sequence=6,
                     occurred_at=at)


def test_a_resized_server_costs_each_flavor_from_its_confirmation() -> None:
    # m1.small from T0, m1.large from the confirmation at T0 + 2h, deleted at T0 + 5h
    events = [spawned("vm", T0), confirmed("vm", T0 + 2 * H), deleted("vm", T0 + 5 * H)]
    for ledger in (ledger_of(*events), ledger_of(*reversed(events))):
        [usage] = tenant_usage(ledger, T0, T0 + 10 * H, now=T0 + 9 * H)
        assert [(s["flavor"], s["hours"]) for s in usage["server_usages"]] == [
            ("m1.small", 2.0), ("m1.large", 3.0)]
        assert usage["total_vcpus_usage"] == 1 * 2.0 + 4 * 3.0
        assert usage["total_memory_mb_usage"] == 2048 * 2.0 + 8192 * 3.0
        assert usage["total_local_gb_usage"] == 20 * 2.0 + 90 * 3.0
        assert usage["total_hours"] == 5.0
    # the billing service records the change once, and its ledger bills what the recomputation does
    ledger = UsageLedger()
    written = []
    for event in events + [confirmed("vm", T0 + 2 * H)]:
        for output in service.decide(ledger, event, CTX):
            written.append(output.event)
            evolve_ledger(ledger, output.event)
    assert [e.type for e in written] == [
        EventType.USAGE_OPENED, EventType.USAGE_RESIZED, EventType.USAGE_CLOSED]
    assert tenant_usage(ledger, T0, T0 + 10 * H, now=T0) == tenant_usage(
        ledger_of(*events), T0, T0 + 10 * H, now=T0)


def test_a_resize_record_read_twice_bills_as_once() -> None:
    """The API's ledger folds the billing topic without dead-lettering a record stored twice (a
    replayed copy): the copy of a usage_resized must not add a row of its own."""
    ledger = UsageLedger()
    for event in [spawned("vm", T0), confirmed("vm", T0 + 2 * H), deleted("vm", T0 + 5 * H)]:
        for output in service.decide(ledger, event, CTX):
            evolve_ledger(ledger, output.event)
            if output.event.type == EventType.USAGE_RESIZED:
                evolve_ledger(ledger, dataclasses.replace(output.event))  # the copy
    [usage] = tenant_usage(ledger, T0, T0 + 10 * H, now=T0 + 9 * H)
    assert [(s["flavor"], s["hours"]) for s in usage["server_usages"]] == [
        ("m1.small", 2.0), ("m1.large", 3.0)]
    assert ledger.usages["vm"].resizes == [(T0 + 2 * H, ledger.usages["vm"].resizes[0][1])]


# -- what the billing service keeps (issue 15 item 7: flat memory over waves) --------------------
def billed(ledger: BillingLedger, event: Event) -> list[Event]:
    """The billing service's step on `event` and the fold of what it wrote, as the runner does,
    its records stamped with the input's time (the log's clock in these tests), then settled."""
    outputs = [o.event for o in service.decide(ledger, event, CTX)]
    for out in outputs:
        out.occurred_at = event.occurred_at
        service.SERVICE.evolve(ledger, out)
    assert service.SERVICE.settle is not None
    service.SERVICE.settle(ledger)
    return outputs


def test_billing_forgets_a_finished_usage_an_hour_of_log_time_later_never_before() -> None:
    ledger = BillingLedger()
    billed(ledger, spawned("done", T0))
    billed(ledger, deleted("done", T0 + H))
    billed(ledger, spawned("running", T0 + H))
    billed(ledger, deleted("deleted-first", T0 + H))  # its spawned is still to be read
    assert set(ledger.usages) == {"done", "running", "deleted-first"}
    assert billed(ledger, deleted("done", T0 + H + 1000)) == []  # redelivered within the hour
    billed(ledger, spawned("later", T0 + 2 * H + 120_000))  # the log moved on past the hour
    assert set(ledger.usages) == {"running", "deleted-first", "later"}
    # a deletion read before its spawn is kept however late the spawn comes, then opened once
    (opened,) = billed(ledger, spawned("deleted-first", T0 + 10 * H))
    assert opened.type == EventType.USAGE_OPENED
    billed(ledger, spawned("last", T0 + 11 * H + 120_000))
    assert set(ledger.usages) == {"running", "later", "last"}
    assert ledger.records == 7


def test_billings_state_stays_flat_over_waves_of_servers_created_and_deleted() -> None:
    ledger = BillingLedger()
    kept = []
    for wave in range(6):
        start = T0 + wave * 2 * H
        servers = [f"w{wave}-{i}" for i in range(50)]
        for i, server in enumerate(servers):
            billed(ledger, spawned(server, start + i))
        for i, server in enumerate(servers):
            billed(ledger, deleted(server, start + H // 2 + i))
        kept.append(len(ledger.usages))
    # each wave's servers go once the log is an hour past their deletion (the next wave's start):
    # what billing keeps is the last wave's, not every server it ever billed
    assert kept == [50] * 6
    assert ledger.records == 6 * 100


def test_copies_of_a_forgotten_usages_records_never_make_billing_write_more() -> None:
    # why billing's fold may keep no id per record (Service.replay_tolerant): a copy refolded only
    # brings back an opened or closed usage, which may keep billing from writing, never make it
    assert service.SERVICE.replay_tolerant == (Topic.BILLING,)
    ledger = BillingLedger()
    records = billed(ledger, spawned("gone", T0)) + billed(ledger, deleted("gone", T0 + H))
    billed(ledger, spawned("later", T0 + 3 * H))
    assert "gone" not in ledger.usages
    inputs = (spawned("gone", T0), deleted("gone", T0 + H), spawned("new", T0 + 4 * H))
    without = [[o.event.type for o in service.decide(ledger, event, CTX)] for event in inputs]
    assert without[2] == [EventType.USAGE_OPENED], "new servers are billed"
    for copies in (records[:1], records[1:], records, records[::-1]):
        replayed = BillingLedger(usages={k: dataclasses.replace(u) for k, u in ledger.usages.items()})
        for copy in copies:
            service.SERVICE.evolve(replayed, copy)
        for event, plain in zip(inputs, without, strict=True):
            written = [o.event.type for o in service.decide(replayed, event, CTX)]
            assert set(written) <= set(plain), (copies, event.type)
        assert service.decide(replayed, inputs[2], CTX), "new servers are still billed"
