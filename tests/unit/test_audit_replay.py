"""`eventsvm replay`: the read models rebuilt from a log, now and at a past moment."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pytest

from eventsvm.app.audit_cli import add_commands
from eventsvm.events.codec import Codec
from eventsvm.events.model import Event, EventType
from eventsvm.log.port import EventLog, OutRecord
from eventsvm.projections.replay import Until, model_differences, parse_time, parse_until, replay
from tests.factories import (
    BASE_MS,
    _event,
    event_records,
    fold_each,
    instance_chain,
    sample_event,
    signed_records,
)

CODEC = Codec()


def append(log: EventLog, events: list[Event], stored_at: int | None = None) -> None:
    log.append(event_records(events, stored_at))


def failed_then_deleted(rng: random.Random) -> list[Event]:
    """An instance that failed for good, then was deleted: both terminal paths of the projection."""
    requested, authenticated, scheduled, resolved, _spawned = instance_chain(rng)
    body = dict(sample_event(EventType.INSTANCE_FAILED, rng).body, host=resolved.body["host"],
                stage="spawner", final=True, details="libvirt: domain crashed")
    iid = requested.aggregate_id
    failed = _event(EventType.INSTANCE_FAILED, iid, body, rng, resolved)
    delete = _event(EventType.INSTANCE_DELETE_REQUESTED, iid, {"host": body["host"]}, rng, failed)
    deleted = _event(EventType.INSTANCE_DELETED, requested.aggregate_id,
                     {"host": body["host"], "terminated_at": BASE_MS + 5, "stage": "resolver"}, rng, delete)
    return [requested, authenticated, scheduled, resolved, failed, delete, deleted]


def test_a_full_replay_equals_folding_every_event_and_reports_what_it_read(log: EventLog) -> None:
    rng = random.Random(1)
    events = [e for _ in range(40) for e in instance_chain(rng)] + failed_then_deleted(rng)
    append(log, events)
    models, report = replay(log, CODEC)
    assert model_differences(models, fold_each(events)) == []
    assert report.events == len(events)
    assert report.events_by_topic["eventsvm.instance.spawned"] == 40
    assert report.events_by_topic["eventsvm.instance.failed"] == 1
    assert report.instances_by_status == {"ACTIVE": 40, "DELETED": 1}
    assert report.events_per_second > 0


def test_until_a_time_gives_the_state_as_it_was_then(log: EventLog) -> None:
    rng = random.Random(2)
    chain = failed_then_deleted(rng)
    for n, event in enumerate(chain):
        append(log, [event], stored_at=BASE_MS + n * 1000)
    before_failure, _ = replay(log, CODEC, Until(ms=BASE_MS + 3000))
    inst = before_failure.instances.get(chain[0].aggregate_id)
    assert inst is not None
    assert (inst.status, inst.task_state, inst.host) == ("BUILD", "spawning", chain[3].body["host"])
    failed, _ = replay(log, CODEC, parse_until("eventsvm.instance.failed:0:0", log))
    inst = failed.instances.get(chain[0].aggregate_id)
    assert inst is not None and inst.status == "ERROR" and inst.fault is not None
    now, _ = replay(log, CODEC)
    assert now.instances.instances[chain[0].aggregate_id].status == "DELETED"


def test_times_are_read_as_iso_8601_utc_or_epoch_ms() -> None:
    assert parse_time("2024-11-26T05:46:40Z") == BASE_MS
    assert parse_time("2024-11-26T05:46:40") == BASE_MS
    assert parse_time("2024-11-26T06:46:40+01:00") == BASE_MS
    assert parse_time(f"@{BASE_MS}") == BASE_MS
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday")


def test_an_offset_with_no_record_is_refused(log: EventLog) -> None:
    with pytest.raises(ValueError, match="no record at eventsvm.instance.spawned:0:5"):
        parse_until("eventsvm.instance.spawned:0:5", log)


def test_undecodable_records_are_counted_and_skipped_like_the_live_model_does(log: EventLog) -> None:
    chain = instance_chain(random.Random(3))
    append(log, chain)
    log.append([OutRecord("eventsvm.instance.spawned", b"junk", b"\xc3\x01garbage")])
    models, report = replay(log, CODEC)
    assert report.undecodable == 1
    assert model_differences(models, fold_each(chain)) == []


def test_the_replay_command_prints_every_instance_as_json(log: EventLog, db: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    chain = instance_chain(random.Random(4))
    data_dir = db.parent / "data"
    log.append(signed_records(data_dir, chain))  # the command trusts the cloud's writers only
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["replay", "--log", f"sqlite://{db}", "--data-dir", str(data_dir), "--json"])
    assert args.func(args) == 0
    document = json.loads(capsys.readouterr().out)
    (server,) = document["instances"]
    assert server["id"] == chain[0].aggregate_id
    assert server["name"] == chain[0].body["name"]
    assert (server["status"], server["vm_state"]) == ("ACTIVE", "active")
    assert server["host"] == chain[4].body["host"]
    assert server["addresses"][0]["ip_address"] == chain[3].body["ports"][0]["ip_address"]
    assert server["project_id"] == chain[0].project_id
    assert document["events_by_topic"]["eventsvm.instance.requested"] == 1
