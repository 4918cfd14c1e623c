"""What the pipeline services and the API's read model keep per instance (issue 15 item 7): shared
values instead of copies, and nothing of a deleted instance once its deletion is older than the
horizon (a deleted server: its retention), dropped only when the state settles (every state topic
folded to its end), so a record read late in a rebuild still finds the instance gone. Pure evolve /
settle over the factories' events, no log."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import pytest

from consumers import authenticator, resolver, scheduler
from eventsvm.events.codec import decode, encode
from eventsvm.events.model import Event, EventType
from eventsvm.projections.readmodel import Models, fold
from eventsvm.runtime.service import Service
from eventsvm.state.compact import (
    FORGET_AFTER_MS,
    CompactRecord,
    Departures,
    Shared,
    frozen_ports,
    frozen_record,
    remember_answer,
)
from eventsvm.state.instances import DELETED_RETENTION_MS
from tests.factories import deletion_chain, instance_chain


def _fold(service: Service[Any], events: list[Event], state: Any = None) -> Any:
    topics = {str(t) for t in service.state_topics}
    state = service.initial_state() if state is None else state
    for event in events:
        if str(event.topic) in topics:
            state = service.evolve(state, event)
    return state


def _later(event: Event, ms: int) -> Event:
    """`event` as if it had been written `ms` later (the log's clock moved on)."""
    event.occurred_at += ms
    return event


def test_shared_gives_one_object_per_distinct_value_and_stays_bounded() -> None:
    shared = Shared(limit=2)
    a, b = {"vcpus": 1, "ram_mb": 512}, {"vcpus": 1, "ram_mb": 512}
    assert shared(a) is a and shared(b) is a
    assert shared([1, 2]) == [1, 2] and shared((1, 2)) == (1, 2)  # a list and a tuple are not one
    assert shared((1, 2)) is not shared([1, 2])
    third = {"other": True}
    assert shared(third) is third and len(shared) == 2  # full: handed back, not remembered


def test_shared_tells_types_apart_and_shares_what_marshal_cannot_write() -> None:
    shared = Shared()
    flag = {"enabled": True}
    assert shared(flag) is flag and shared({"enabled": 1}) is not flag  # equal, not the same value
    # a string built at run time (not interned) and a literal (interned) are the same key
    built = {"name": "".join(["m1.", "tiny"])}
    assert shared({"name": "m1.tiny"}) is shared(built)
    edit = [(EventType.INSTANCE_UPDATED, {"name": "x"})]  # an enum member: no marshal form
    assert shared(edit) is edit and shared([(EventType.INSTANCE_UPDATED, {"name": "x"})]) is edit


def test_a_compact_record_gives_the_dict_back_sharing_equal_values() -> None:
    rng = random.Random(3)
    specs = [chain[2].body["spec"] for chain in (instance_chain(rng), instance_chain(rng))]
    first, second = (CompactRecord.of(spec) for spec in specs)
    assert first.as_dict() == specs[0] and second.as_dict() == specs[1]
    assert first.keys is second.keys
    assert first.as_dict()["flavor"] is second.as_dict()["flavor"]


def test_frozen_ports_read_as_the_dicts_they_were_and_share_the_networks_strings() -> None:
    rng = random.Random(4)
    ports = [instance_chain(rng)[3].body["ports"][0] for _ in range(2)]
    first, second = (frozen_ports([port])[0] for port in ports)
    assert first == ports[0] and dict(first) == ports[0] and list(first) == list(ports[0])
    assert first != second and len(first) == len(ports[0])
    assert first["ip_address"] == ports[0]["ip_address"] and first.get("nosuch") is None
    with pytest.raises(KeyError):
        first["nosuch"]
    assert first["network_id"] is second["network_id"] and first["subnet_id"] is second["subnet_id"]


def test_frozen_records_of_any_shape_pickle_and_compare_as_dicts() -> None:
    """A record's class is made for its shape at run time: a snapshot (pickle) still restores it,
    keys that are no identifiers work, and records of zero or one key too."""
    for record in ({}, {"binding:host_id": "compute-1"}, {"a": 1, "b:c": [2], "d": None}):
        frozen = frozen_record(tuple(record), record.values())
        back = pickle.loads(pickle.dumps(frozen))
        assert frozen == record and back == record and dict(back) == record and back == frozen
        assert type(back) is type(frozen) and frozen.values_tuple() == tuple(record.values())
    assert frozen_record(("a", "b"), (1, 2)) == {"b": 2, "a": 1}  # any order, as a mapping
    with pytest.raises(ValueError):
        frozen_record(("a", "b"), (1,))


def test_answers_are_remembered_once_in_order() -> None:
    answered: dict[str, tuple[str, ...]] = {}
    for cause in ("a", "b", "a"):
        remember_answer(answered, "i", cause)
    assert answered == {"i": ("a", "b")}


def test_departures_forget_only_what_went_before_the_horizon_in_any_fold_order() -> None:
    gone = Departures()
    gone.add("late", 10 * FORGET_AFTER_MS)
    gone.add("early", 1_000)
    gone.saw(10 * FORGET_AFTER_MS + 5_000)
    assert gone.forget() == ["early"]
    assert "late" in gone and "early" not in gone


def test_the_authenticator_counts_no_usage_for_an_instance_whose_deletion_it_read_first() -> None:
    rng = random.Random(5)
    chain = instance_chain(rng)
    deletion = deletion_chain(chain[-1], rng)
    # a rebuild that reads the deleted topic before the authenticated one
    state = _fold(authenticator.SERVICE, [*deletion, *chain])
    assert state.project_usage(chain[0].project_id or "").instances == 0
    assert state.usage == {}  # the project's entry left with its last instance


def test_each_service_forgets_a_deleted_instance_once_settled_past_the_horizon() -> None:
    rng = random.Random(7)
    chain = instance_chain(rng)
    deletion = deletion_chain(chain[-1], rng)
    instance_id = chain[0].aggregate_id
    another = instance_chain(rng)
    for service in (authenticator.SERVICE, scheduler.SERVICE, resolver.SERVICE):
        assert service.settle is not None
        state = _fold(service, [*chain, *deletion])
        state = service.settle(state)
        assert instance_id in state.gone, f"{service.name} forgot a deletion within the horizon"
        # the log goes on: an hour later another instance is built
        moved_on = [_later(e, FORGET_AFTER_MS + 60_000 + deletion[-1].occurred_at - e.occurred_at)
                    for e in another]
        state = service.settle(_fold(service, moved_on, state))
        assert instance_id not in state.gone, f"{service.name} still remembers a long-deleted instance"
    sched = _fold(scheduler.SERVICE, [*chain, *deletion])
    assert instance_id not in sched.specs and instance_id not in sched.answered


def test_the_scheduler_keeps_each_placed_spec_as_it_was_scheduled() -> None:
    rng = random.Random(9)
    chain = instance_chain(rng)
    state = _fold(scheduler.SERVICE, chain)
    assert state.specs[chain[0].aggregate_id].as_dict() == chain[2].body["spec"]
    assert state.answered[chain[0].aggregate_id] == (chain[1].event_id,)


def test_the_read_model_keeps_a_deleted_server_for_its_retention_then_forgets_it() -> None:
    rng = random.Random(11)
    models = Models()
    live, deleted_one = instance_chain(rng), instance_chain(rng)
    deletion = deletion_chain(deleted_one[-1], rng)
    for event in [*live, *deleted_one, *deletion]:
        fold(models, event, None, str(event.topic))
    models.settle()
    kept = models.instances.get(deleted_one[0].aggregate_id)
    assert kept is not None and kept.status == "DELETED"
    assert [a[0] for a in kept.actions][-1] == "instance.deleted"
    # a day (log time) later, caught up with the log: the deleted server leaves, the live one stays
    later = _later(instance_chain(rng)[0], DELETED_RETENTION_MS + deletion[-1].occurred_at + 60_000)
    fold(models, later, None, str(later.topic))
    models.settle()
    assert models.instances.get(deleted_one[0].aggregate_id) is None
    assert models.instances.get(live[0].aggregate_id) is not None


def test_a_read_model_without_retention_keeps_deleted_servers_for_good() -> None:
    rng = random.Random(13)
    models = Models()
    models.instances.deleted_retention_ms = None
    chain = instance_chain(rng)
    for event in [*chain, *deletion_chain(chain[-1], rng)]:
        fold(models, event, None, str(event.topic))
    later = _later(instance_chain(rng)[0], 10 * DELETED_RETENTION_MS)
    fold(models, later, None, str(later.topic))
    models.settle()
    assert models.instances.get(chain[0].aggregate_id) is not None


def test_the_read_model_keeps_one_copy_of_what_a_servers_events_repeat() -> None:
    # as read from the log: every event decoded from its own bytes, with its own strings
    first, second = ([decode(encode(e)) for e in instance_chain(random.Random(seed))] for seed in (1, 2))
    models = Models()
    for event in [*first, *second]:
        fold(models, event, None, str(event.topic))
    one, other = (models.instances.instances[chain[0].aggregate_id] for chain in (first, second))
    entries = one.actions
    assert one.timeline[0] is other.timeline[0]  # (instance.requested, no host, no detail): one step for both
    assert len(entries) == 5 and len({id(request_id) for _, _, request_id, *_ in entries}) == 1
    assert all(request_id is one.request_id for _, _, request_id, *_ in entries)
    assert all(user_id is one.user_id for _, _, _, user_id, *_ in entries)
    assert list(one.ports) == first[3].body["ports"]  # the same values, the network's strings shared:
    assert one.ports[0]["network_id"] is other.ports[0]["network_id"]
    assert one.ports[0]["gateway_ip"] is other.ports[0]["gateway_ip"]
    assert one.ports[0]["ip_address"] is not other.ports[0]["ip_address"]
    assert [dict(p) for p in one.ports] == first[4].body["addresses"]  # the spawn's, kept from before


def test_the_departed_horizon_is_an_operators_setting_every_service_of_the_process_follows() -> None:
    from eventsvm.app.children import child_commands
    from eventsvm.app.cli import build_parser
    from eventsvm.app.options import UsageError, apply_departed_horizon
    from eventsvm.config import LogConfig
    from eventsvm.state.compact import departed_horizon_ms

    rng = random.Random(11)
    chain = instance_chain(rng)
    deletion = deletion_chain(chain[-1], rng)
    instance_id = chain[0].aggregate_id
    later = [_later(e, 5 * 60_000 + 1_000 + deletion[-1].occurred_at - e.occurred_at)
             for e in instance_chain(rng)]
    up = build_parser().parse_args(["up", "--forget-departed-after-minutes", "5"])
    try:
        apply_departed_horizon(up)
        assert departed_horizon_ms() == 300_000
        for service in (authenticator.SERVICE, scheduler.SERVICE, resolver.SERVICE):
            assert service.settle is not None
            state = service.settle(_fold(service, [*chain, *deletion]))
            assert instance_id in state.gone
            # five minutes of log time on, not an hour: forgotten
            state = service.settle(_fold(service, later, state))
            assert instance_id not in state.gone, service.name
        # `up --processes` hands the setting to every child it starts
        commands = child_commands(up, Path("/tmp/unused"), LogConfig(url="sqlite:///tmp/unused"), {})
        assert all(c[c.index("--forget-departed-after-minutes") + 1] == "5.0" for c in commands.values())
        with pytest.raises(UsageError):
            apply_departed_horizon(build_parser().parse_args(["up", "--forget-departed-after-minutes", "-1"]))
    finally:
        apply_departed_horizon(build_parser().parse_args(["run", "scheduler"]))
    assert departed_horizon_ms() == FORGET_AFTER_MS
