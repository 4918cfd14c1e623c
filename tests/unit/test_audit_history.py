"""`eventsvm history SERVER` and the os-instance-actions built from the same timeline."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventsvm.app.cli import main
from eventsvm.events.codec import Codec
from eventsvm.events.model import INSTANCE_TOPICS, Event, EventType
from eventsvm.log.port import EventLog
from eventsvm.projections.history import (
    UnknownServer,
    find_instance,
    instance_actions,
    instance_stages,
    timeline_lines,
)
from eventsvm.projections.replay import replay
from eventsvm.state.printable import printable
from tests.factories import _event, event_records, instance_chain, move_body, sqlite_log

CODEC = Codec()


def rescheduled(rng: random.Random) -> list[Event]:
    """A build whose spawn failed on its first host and succeeded on the alternate, then a delete."""
    requested, authenticated, scheduled, resolved, spawned = instance_chain(rng)
    iid, first, second = requested.aggregate_id, scheduled.body["host"], scheduled.body["alternates"][0]
    failed = _event(EventType.INSTANCE_FAILED, iid, {
        "stage": "spawner", "reason": "libvirt: internal error", "code": 500, "retryable": True,
        "final": False, "host": first, "attempt": 1, "details": "virDomainCreate failed",
        "alternates": [second], "spec": scheduled.body["spec"]}, rng, resolved)
    on_second = {"host": second, "attempt": 2}
    again = _event(EventType.INSTANCE_SCHEDULED, iid, scheduled.body | on_second, rng, failed)
    resolved2 = _event(EventType.INSTANCE_RESOURCES_RESOLVED, iid, resolved.body | on_second, rng, again)
    spawned2 = _event(EventType.INSTANCE_SPAWNED, iid, spawned.body | on_second, rng, resolved2)
    delete = _event(EventType.INSTANCE_DELETE_REQUESTED, iid, {"host": second}, rng, spawned2)
    delete.request_id, delete.user_id = "req-delete", "operator"
    gone = {"host": second, "terminated_at": 1, "stage": "spawner"}
    deleted = _event(EventType.INSTANCE_DELETED, iid, gone, rng, delete)
    return [requested, authenticated, scheduled, resolved, failed, again, resolved2, spawned2, delete,
            deleted]


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EventLog]:
    with sqlite_log(tmp_path / "log.db", 2, INSTANCE_TOPICS) as opened:
        yield opened


def append(log: EventLog, events: list[Event]) -> None:
    log.append(event_records(events))


def test_the_timeline_shows_each_stage_the_failure_and_the_reschedule(log: EventLog) -> None:
    rng = random.Random(1)
    events = rescheduled(rng)
    append(log, [*instance_chain(rng), *events])
    stages = instance_stages(log, CODEC, find_instance(log, CODEC, events[0].body["name"]))
    assert [s.event.event_id for s in stages] == [e.event_id for e in events]
    text = "\n".join(timeline_lines(stages))
    assert f"asked by user {events[0].user_id} of project {events[0].project_id}" in text
    assert "failed at spawner (will be rescheduled): libvirt: internal error" in text
    assert f"host={events[5].body['host']} attempt=2" in text
    assert "request=req-delete user=operator" in text
    assert text.count("stored eventsvm.instance.") == len(events)


def test_an_unknown_or_ambiguous_name_is_refused(log: EventLog) -> None:
    rng = random.Random(2)
    a, b = instance_chain(rng)[0], instance_chain(rng)[0]
    b.body["name"] = a.body["name"]
    append(log, [a, b])
    assert find_instance(log, CODEC, a.aggregate_id) == a.aggregate_id
    with pytest.raises(UnknownServer, match="2 servers are named"):
        find_instance(log, CODEC, a.body["name"])
    with pytest.raises(UnknownServer, match="no server"):
        find_instance(log, CODEC, "nobody")


def test_instance_actions_are_novas_shape_and_the_same_from_events_or_models(log: EventLog) -> None:
    events = rescheduled(random.Random(3))
    append(log, events)
    iid = events[0].aggregate_id
    from_events = instance_actions(events, iid)
    models, _ = replay(log, CODEC)
    assert instance_actions(models, iid) == from_events
    delete, create = from_events
    assert (delete["action"], delete["request_id"], delete["user_id"]) == ("delete", "req-delete", "operator")
    assert create["action"] == "create" and create["request_id"] == events[0].request_id
    assert create["project_id"] == events[0].project_id and create["message"] is None
    names = [(e["event"], e["result"], e["host"]) for e in create["events"]]
    first, second = events[2].body["host"], events[5].body["host"]
    assert names == [
        ("authenticate", "Success", None),
        ("conductor_schedule_and_build_instances", "Success", first),
        ("compute__build_resources", "Success", first),
        ("compute__do_build_and_run_instance", "Error", first),
        ("conductor_schedule_and_build_instances", "Success", second),
        ("compute__build_resources", "Success", second),
        ("compute__do_build_and_run_instance", "Success", second),
    ]
    failure = create["events"][3]
    assert failure["start_time"] < failure["finish_time"] <= create["events"][4]["start_time"]
    assert create["start_time"].endswith("000") and "T" in create["start_time"]


def test_the_history_command_escapes_what_the_log_holds_before_it_reaches_a_terminal(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # events written before names were checked (or by anyone who can write to the log) may hold a
    # title-setting OSC, colours or a screen clear; the operator's terminal must see them escaped
    rng = random.Random(3)
    events = rescheduled(rng)
    events[0].body["name"] = "\x1b]0;owned\x07evil\x1b[31m"
    events[4].body["reason"] = "boom\x1b[2J\u202etxt.exe\r"
    with sqlite_log(tmp_path / "log.db", 2, INSTANCE_TOPICS) as opened:
        append(opened, events)
    assert main(["history", "--log", f"sqlite://{tmp_path / 'log.db'}", events[0].aggregate_id]) == 0
    out = capsys.readouterr().out
    assert not [c for c in out if c != "\n" and not printable(c)], "raw control characters reached stdout"
    assert "(\\x1b]0;owned\\x07evil\\x1b[31m)" in out
    assert "boom\\x1b[2J\\u202etxt.exe\\x0d" in out


def test_a_failed_resize_and_a_rebuild_in_the_history_and_the_instance_actions(log: EventLog) -> None:
    rng = random.Random(4)
    chain = instance_chain(rng)
    iid, spawned = chain[0].aggregate_id, chain[-1]
    asked = _event(EventType.INSTANCE_MOVE_REQUESTED, iid, move_body(rng), rng, spawned)
    asked.request_id = "req-resize"
    placed = _event(EventType.INSTANCE_MOVE_STEP, iid, move_body(
        rng, step="conductor_migrate_server", host="compute-2", dest_host="compute-2", dest_slot=1,
        task_state="resize_migrating"), rng, asked)
    refused = _event(EventType.INSTANCE_MOVE_FAILED, iid, move_body(
        rng, step="compute_prep_resize", host=None, dest_host="compute-2", task_state=None,
        reason="Insufficient compute resources: Free memory 1024 MB < requested 4096 MB.", code=500),
        rng, placed)
    rebuild = _event(EventType.INSTANCE_MOVE_REQUESTED, iid, move_body(
        rng, action="rebuild", step="api_rebuild", task_state="rebuilding", name="again"), rng, refused)
    rebuild.request_id = "req-rebuild"
    rebuilt = _event(EventType.INSTANCE_MOVE_STEP, iid, move_body(
        rng, action="rebuild", step="compute_rebuild_instance", host=None, task_state=None), rng, rebuild)
    events = [*chain, asked, placed, refused, rebuild, rebuilt]
    append(log, events)
    text = "\n".join(timeline_lines(instance_stages(log, CODEC, iid)))
    assert "action=resize host=compute-1" in text
    assert "compute_prep_resize: active/None  compute-1 -> compute-2  m1.small -> m1.medium  failed: " \
           "Insufficient compute resources" in text
    from_events = instance_actions(events, iid)
    models, _ = replay(log, CODEC)
    assert instance_actions(models, iid) == from_events
    rebuilt_action, resize, _create = from_events
    assert (resize["action"], resize["request_id"], resize["message"]) == ("resize", "req-resize", "Error")
    assert [(e["event"], e["result"]) for e in resize["events"]] == [
        ("conductor_migrate_server", "Success"), ("compute_prep_resize", "Error")]
    assert (rebuilt_action["action"], rebuilt_action["message"]) == ("rebuild", None)
    assert [(e["event"], e["result"]) for e in rebuilt_action["events"]] == [
        ("compute_rebuild_instance", "Success")]
    assert models.instances.instances[iid].name == "again"
