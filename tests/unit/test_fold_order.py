"""A service's state rebuilt from the log must not depend on the order its topics are read in.

One reader over several topics (Kafka hands out partitions in no fixed order) may read a claim
before the registration of its host, or an offload before the spawn it ends. Every order of the
topics must fold to the same claims as the order the events happened in. And a deletion, which
every spawner reads, removes the server's guest from whichever host still has one."""

from __future__ import annotations

import itertools
from typing import Any

from test_deciders import authenticated, compute, folded, host_registered, resolve, schedule, spawn  # noqa: F401
from test_server_shelve import command, offloaded

from consumers import scheduler, spawner
from eventsvm.events.model import TOPIC_OF, Event, EventType, Topic, new_event
from eventsvm.runtime.service import Service


def by_topic(events: list[Event]) -> dict[Topic, list[Event]]:
    """Each topic's events in log order (one instance's events keep their order on a topic)."""
    topics: dict[Topic, list[Event]] = {}
    for event in events:
        topics.setdefault(TOPIC_OF[event.type], []).append(event)
    return topics


def every_topic_order(events: list[Event]) -> list[list[Event]]:
    """The history read topic after topic, in every order of its topics."""
    topics = by_topic(events)
    return [[e for topic in order for e in topics[topic]] for order in itertools.permutations(topics)]


def scheduler_claims(events: list[Event]) -> dict[str, dict[str, Any]]:
    state = folded(scheduler.SERVICE, events)
    return {name: {"claims": dict(host.claims), "ram_mb_used": host.ram_mb_used}
            for name, host in state.hosts.items()}


def test_a_claim_read_before_its_hosts_registration_is_kept() -> None:
    hosts = [host_registered("only", 0, ram_mb=4096)]
    first = schedule(authenticated(flavor="3"), hosts)[0].event  # 4096 MB: the host is full
    claim_first = folded(scheduler.SERVICE, [first, *hosts])
    assert dict(claim_first.hosts["only"].claims) == dict(folded(scheduler.SERVICE, [*hosts, first])
                                                          .hosts["only"].claims)
    assert claim_first.hosts["only"].ram_mb_used == 4096
    assert claim_first.placements == {first.aggregate_id: "only"}
    # so the full host is not handed out twice, whichever topic the rebuild read first
    [refused] = schedule(authenticated(flavor="3"), [first, *hosts])
    assert refused.event.type == EventType.INSTANCE_FAILED, refused.event.body


def test_a_registration_keeps_claims_read_before_it_and_a_delete_before_it_frees_them() -> None:
    hosts = [host_registered("a", 0), host_registered("b", 1)]
    first = schedule(authenticated(), hosts)[0].event
    second = schedule(authenticated(), [*hosts, first])[0].event
    gone = new_event(EventType.INSTANCE_DELETED, first.aggregate_id,
                     {"host": first.body["host"], "terminated_at": 1, "stage": "spawner"}, cause=first)
    history = [*hosts, first, second, gone]
    expected = scheduler_claims(history)
    assert sum(len(h["claims"]) for h in expected.values()) == 1
    for order in every_topic_order(history):
        assert scheduler_claims(order) == expected, [e.type for e in order]


def test_the_scheduler_folds_an_offload_read_before_its_placement_to_no_claim() -> None:
    hosts = [host_registered("only", 0, ram_mb=4096)]
    first = schedule(authenticated(flavor="3"), hosts)[0].event
    shelved = offloaded("only", first)
    history = [*hosts, first, shelved]
    for order in every_topic_order(history):
        state = folded(scheduler.SERVICE, order)
        assert dict(state.hosts["only"].claims) == {} and state.placements == {}, [e.type for e in order]
        # and its spec is still there for the unshelve to place again
        unshelve = command(shelved, "unshelve", "shelved_offloaded", None, None)
        [placed] = scheduler.decide(state, unshelve, scheduler.StepContext("t", 0, 1, None))
        assert placed.event.type == EventType.INSTANCE_SCHEDULED and placed.event.body["host"] == "only"


def test_the_spawner_folds_an_offload_read_before_the_spawn_to_no_claim(compute: Any) -> None:  # noqa: F811
    hosts = [host_registered("h0", 0, ram_mb=65536)]
    resolved = resolve(schedule(authenticated(), hosts)[0].event, hosts)[0].event
    spawned = spawn(compute, resolved)[0].event
    shelved = offloaded("h0", spawned)
    service: Service[spawner.SpawnerState] = spawner.service_for("h0")
    for order in every_topic_order([spawned, shelved]):
        assert folded(service, order).claims == {}, [e.type for e in order]


def test_a_deletion_recorded_on_another_host_destroys_the_guest_left_here(compute: Any) -> None:  # noqa: F811
    hosts = [host_registered("h0", 0, ram_mb=65536)]
    resolved = resolve(schedule(authenticated(), hosts)[0].event, hosts)[0].event
    spawned = spawn(compute, resolved)[0].event
    # a resize's source appended the deletion; this host (its destination) still runs a guest
    gone = new_event(EventType.INSTANCE_DELETED, spawned.aggregate_id,
                     {"host": "elsewhere", "terminated_at": 1, "stage": "spawner"}, cause=spawned)
    assert spawn(compute, gone, [spawned]) == []  # nothing more to record: it is deleted already
    assert compute.hypervisor.state(spawned.aggregate_id) is None
    assert spawn(compute, gone, [spawned, gone]) == []  # read again: nothing to destroy, no error
