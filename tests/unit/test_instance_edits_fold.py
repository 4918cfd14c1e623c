"""The owner's edits of a server (instance.updated, instance.metadata_changed) in the instance fold,
the replay and `eventsvm history`: the same model whichever topic a reader folds first."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventsvm.events.codec import Codec
from eventsvm.events.model import INSTANCE_TOPICS, Event, EventType, Topic
from eventsvm.log.port import EventLog
from eventsvm.monitoring.metrics import PipelineMonitor
from eventsvm.projections.history import instance_actions, instance_stages, timeline_lines
from eventsvm.projections.readmodel import Models, fold
from eventsvm.projections.replay import replay
from eventsvm.state.instances import evolve_projection, initial_projection
from tests.factories import _event, event_records, instance_chain, sqlite_log

CODEC = Codec()


def edited(rng: random.Random) -> list[Event]:
    """A built server renamed, given metadata, an item removed, then all of it replaced."""
    chain = instance_chain(rng)
    iid, previous = chain[0].aggregate_id, chain[-1]
    edits: list[Event] = []
    for kind, body in (
        (EventType.INSTANCE_UPDATED, {"name": "renamed", "access_ipv4": "203.0.113.9", "access_ipv6": None}),
        (EventType.INSTANCE_METADATA_CHANGED, {"set": {"a": "1", "b": "2"}, "removed": [], "replace": False}),
        (EventType.INSTANCE_METADATA_CHANGED, {"set": {}, "removed": ["a"], "replace": False}),
        (EventType.INSTANCE_UPDATED, {"name": "final", "access_ipv4": None, "access_ipv6": "2001:db8::9"}),
        (EventType.INSTANCE_METADATA_CHANGED, {"set": {"c": "3"}, "removed": [], "replace": True}),
        (EventType.INSTANCE_METADATA_CHANGED, {"set": {"d": "4"}, "removed": [], "replace": False}),
    ):
        previous = _event(kind, iid, body, rng, previous)
        edits.append(previous)
    return [*chain, *edits]


@pytest.mark.parametrize("edits_first", [False, True])
def test_edits_override_the_request_in_either_read_order(edits_first: bool) -> None:
    events = edited(random.Random(3))
    if edits_first:  # as a replay that reads the updated topic before the requested one
        events = sorted(events, key=lambda e: e.topic != Topic.UPDATED)
    model = initial_projection()
    for event in events:
        evolve_projection(model, event)
    inst = model.get(events[0].aggregate_id)
    assert inst is not None
    assert (inst.name, inst.access_ipv4, inst.access_ipv6) == ("final", "203.0.113.9", "2001:db8::9")
    assert inst.metadata == {"c": "3", "d": "4"}
    assert inst.status == "ACTIVE" and inst.last_sequence == 11


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EventLog]:
    with sqlite_log(tmp_path / "log.db", 2, INSTANCE_TOPICS) as opened:
        yield opened


def test_history_shows_the_edits_and_instance_actions_leave_them_out(log: EventLog) -> None:
    events = edited(random.Random(4))
    log.append(event_records(events))
    models, _report = replay(log, CODEC)
    inst = models.instances.get(events[0].aggregate_id)
    assert inst is not None and inst.name == "final" and inst.metadata == {"c": "3", "d": "4"}
    stages = instance_stages(log, CODEC, events[0].aggregate_id)
    assert [s.event.event_id for s in stages] == [e.event_id for e in events]
    text = "\n".join(timeline_lines(stages))
    assert "updated name='renamed' accessIPv4='203.0.113.9'" in text
    assert "metadata set a, b" in text and "metadata removed a" in text
    assert "metadata replaced: set c" in text
    assert text.count("stored eventsvm.instance.updated") == 6
    for source in (models, stages):
        assert [a["action"] for a in instance_actions(source, events[0].aggregate_id)] == ["create"]


def test_the_monitor_counts_edits_but_they_move_no_stage() -> None:
    events = edited(random.Random(5))
    live = PipelineMonitor()
    for event in events:
        live.observe(event, str(event.topic))
    models = Models()
    for event in events:
        fold(models, event, None, str(event.topic))
    attached = PipelineMonitor()
    attached._replay_models(models)  # what attach() does with history folded before it
    for monitor in (live, attached):
        assert monitor.tracks[events[0].aggregate_id].stage == "spawned"
        assert monitor.passed["spawned"] == 1
