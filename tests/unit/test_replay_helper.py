"""A replay in two processes (eventsvm.projections.replay.ReplayHelper): a second process folds the
upper half of the instance partitions while the first folds the rest. What a user must not notice
is the second process: the same models, the same report, the same seal checked and written, a
forgery in its half refused as in the first's, and a helper that dies or fails costs time only."""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import pickle
import random
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import pytest

from eventsvm.app import audit_cli
from eventsvm.app.audit_cli import add_commands
from eventsvm.app.writers import trusting_codec
from eventsvm.config import LogConfig
from eventsvm.events.codec import Codec
from eventsvm.events.model import Event, EventType, Topic
from eventsvm.log.factory import open_log
from eventsvm.log.port import EventLog, OutRecord, partition_for
from eventsvm.projections.readmodel import ALL_TOPICS, Models
from eventsvm.projections.replay import ReplayHelper, ReplayReport, Until, model_differences, replay
from eventsvm.projections.seal import SealBroken, Sealing
from tests.factories import event_records, instance_chain, signed_records, sqlite_log
from tests.unit.test_seal import admin_grant, alter_stored, seal_by_audit, store_of

PARTITIONS = 3  # the unit log's: the helper reads partitions 1 and 2 of every instance topic


def chains(count: int, seed: int = 7) -> list[Event]:
    rng = random.Random(seed)
    return [e for _ in range(count) for e in instance_chain(rng)]


def helper(db: Path, data_dir: Path, start_method: str = "fork") -> ReplayHelper:
    return ReplayHelper(partial(open_log, LogConfig(url=f"sqlite://{db}")), partial(trusting_codec, data_dir),
                        min_records=0, start_method=start_method)  # type: ignore[arg-type]


# set by a test in this process: a forked helper sees it set, a spawned one (a fresh import) does not
SET_IN_THE_PARENT = False


def open_and_tell(config: LogConfig, answer: Path) -> EventLog:
    """The helper's open_log, writing down whether the helper was forked from the test's process."""
    answer.write_text("forked" if SET_IN_THE_PARENT else "spawned")
    return open_log(config)


def same_report(one: ReplayReport, two: ReplayReport) -> None:
    assert (two.events_by_topic, two.instances_by_status, two.records_read, two.undecodable, two.unfoldable,
            two.sealed, two.complete) == \
           (one.events_by_topic, one.instances_by_status, one.records_read, one.undecodable, one.unfoldable,
            one.sealed, one.complete)


def in_helpers_half(event: Event) -> bool:
    return partition_for(event.aggregate_id.encode(), PARTITIONS) >= PARTITIONS // 2


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_two_processes_rebuild_what_one_does(log: EventLog, db: Path, tmp_path: Path, start_method: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "data"
    events = chains(40)
    log.append(signed_records(data_dir, events))
    # another model's event on an instance topic, in the helper's half: folded all the same
    grant = signed_records(data_dir, [admin_grant()])[0]
    log.append([OutRecord(str(Topic.REQUESTED), grant.key, grant.value, partition=PARTITIONS - 1)])
    codec = trusting_codec(data_dir)

    one, alone = replay(log, codec)
    monkeypatch.setattr(sys.modules[__name__], "SET_IN_THE_PARENT", True)
    told = tmp_path / "started"
    two, helped = replay(log, trusting_codec(data_dir), helper=ReplayHelper(
        partial(open_and_tell, LogConfig(url=f"sqlite://{db}"), told), partial(trusting_codec, data_dir), 0,
        start_method))  # type: ignore[arg-type]
    # "fork" forks only a process of one thread, which a test process need not be (pytest-timeout's
    # timer, threads other tests left): the next test starts a process of its own for that
    assert told.read_text() == "spawned" or start_method == "fork"

    assert model_differences(two, one) == []
    same_report(alone, helped)
    assert alone.helped == 0
    assert 0 < helped.helped < helped.records_read, "the second process read a share, not all"
    assert two.identity.roles_of("u-demo", "p-admin") == {"admin"}, "the grant on an instance topic is folded"
    assert {i.last_digest for i in two.instances.instances.values()} == \
           {i.last_digest for i in one.instances.instances.values()}


def test_a_replay_in_a_process_of_one_thread_forks_its_helper(tmp_path: Path) -> None:
    # a fresh interpreter running the replay alone, as `eventsvm replay` on an SQLite log does
    script = f"""
import sys
from functools import partial
from pathlib import Path
from eventsvm.app.writers import trusting_codec
from eventsvm.config import LogConfig
from eventsvm.log.factory import open_log
from eventsvm.projections.readmodel import ALL_TOPICS
from eventsvm.projections.replay import ReplayHelper, Until, model_differences, replay
from tests.factories import signed_records, sqlite_log
from tests.unit import test_replay_helper as here
tmp = Path({str(tmp_path)!r})
db, data_dir, told = tmp / "log.db", tmp / "data", tmp / "told"
with sqlite_log(db, {PARTITIONS}, ALL_TOPICS) as log:
    log.append(signed_records(data_dir, here.chains(30)))
    one, _ = replay(log, trusting_codec(data_dir))
    here.SET_IN_THE_PARENT = True
    helper = ReplayHelper(partial(here.open_and_tell, LogConfig(url=f"sqlite://{{db}}"), told),
                          partial(trusting_codec, data_dir), 0)
    two, report = replay(log, trusting_codec(data_dir), helper=helper)
    print(told.read_text(), report.helped > 0, model_differences(two, one))
"""
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parents[2])
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["forked", "True", "[]"]


def test_two_processes_stop_at_the_same_moment_as_one(log: EventLog, db: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    events = chains(40)
    log.append(signed_records(data_dir, events[:100], stored_at=1_000))
    log.append(signed_records(data_dir, events[100:], stored_at=2_000))
    until = Until(ms=1_500)

    one, alone = replay(log, trusting_codec(data_dir), until)
    two, helped = replay(log, trusting_codec(data_dir), until, helper=helper(db, data_dir))
    assert alone.events == 100 and helped.helped > 0
    assert model_differences(two, one) == []
    same_report(alone, helped)


def test_a_sealed_replay_in_two_processes_checks_and_writes_the_whole_seal(
        log: EventLog, db: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    events = chains(30)
    log.append(signed_records(data_dir, events))
    codec = trusting_codec(data_dir)
    store = store_of(db, data_dir)
    audited = seal_by_audit(log, codec, store)

    one, alone = replay(log, trusting_codec(data_dir), sealing=(first := Sealing(store.load(log))))
    two, helped = replay(log, trusting_codec(data_dir), sealing=(second := Sealing(store.load(log))),
                         helper=helper(db, data_dir))
    assert helped.sealed == alone.sealed == len(events), "every record vouched for, in either half"
    assert helped.helped > 0
    assert model_differences(two, one) == []
    # the next seal covers the helper's partitions too, with the digests one process computes
    assert second.seal("log").partitions == first.seal("log").partitions == audited.seal("log").partitions


@pytest.mark.parametrize("half", ["the helper's", "the first process's"])
def test_a_record_altered_in_either_half_breaks_the_seal_and_leaves_no_helper_behind(
        log: EventLog, db: Path, tmp_path: Path, half: str) -> None:
    data_dir = tmp_path / "data"
    events = chains(20)
    log.append(signed_records(data_dir, events))
    store = store_of(db, data_dir)
    seal_by_audit(log, trusting_codec(data_dir), store)
    helpers = half == "the helper's"
    requests = [e for e in events if e.type == EventType.INSTANCE_REQUESTED]
    victim = next(e for e in requests if in_helpers_half(e) == helpers)
    name = victim.body["name"].encode()
    part, _ = alter_stored(db, str(Topic.REQUESTED), 0, name, name[:-1] + b"X")
    assert (part >= PARTITIONS // 2) == helpers

    with pytest.raises(SealBroken) as broken:
        replay(log, trusting_codec(data_dir), sealing=Sealing(store.load(log)), helper=helper(db, data_dir))
    assert broken.value.where == (str(Topic.REQUESTED), part)
    # stopped in the first half, the replay stops the helper still folding the other
    assert multiprocessing.active_children() == [], "the helper is stopped with the replay"
    assert [t.name for t in threading.enumerate() if t.name == "replay-helper-receiver"] == []


def _dies() -> EventLog:
    os._exit(3)  # as a helper killed by the kernel would: no answer at all


def _cannot_read_keys() -> Codec:
    raise OSError("signing-keys: permission denied")


@pytest.mark.parametrize("failure", ["dies", "fails"])
def test_a_helper_that_dies_or_fails_leaves_its_half_to_the_first_process(
        log: EventLog, db: Path, tmp_path: Path, failure: str, caplog: pytest.LogCaptureFixture) -> None:
    data_dir = tmp_path / "data"
    log.append(signed_records(data_dir, chains(20)))
    codec = trusting_codec(data_dir)
    broken = helper(db, data_dir)
    broken = ReplayHelper(_dies, broken.codec, 0) if failure == "dies" else \
        ReplayHelper(broken.open_log, _cannot_read_keys, 0, "fork")

    one, alone = replay(log, codec)
    with caplog.at_level(logging.WARNING):
        two, helped = replay(log, trusting_codec(data_dir), helper=broken)
    assert model_differences(two, one) == []
    same_report(alone, helped)
    assert helped.helped == 0
    said = "ended before its last share" if failure == "dies" else "permission denied"
    assert said in caplog.text


def test_an_instance_whose_events_are_not_in_one_partition_number_is_still_folded_whole(
        log: EventLog, db: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # another writer's partitioner: each instance's first event in partition 0, the rest in 2
    records = event_records(chains(10))
    placed = [OutRecord(r.topic, r.key, r.value, partition=0 if r.topic == str(Topic.REQUESTED) else 2)
              for r in records]
    log.append(placed)
    one, alone = replay(log, Codec())
    with caplog.at_level(logging.WARNING):
        two, helped = replay(log, Codec(), helper=ReplayHelper(helper(db, tmp_path).open_log, Codec, 0))
    assert "hold instances of this process's too" in caplog.text
    assert model_differences(two, one) == []
    same_report(alone, helped)
    assert set(alone.instances_by_status) == {"ACTIVE"}


def test_a_small_log_is_replayed_in_one_process(log: EventLog, db: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    log.append(signed_records(data_dir, chains(10)))
    small = ReplayHelper(partial(open_log, LogConfig(url=f"sqlite://{db}")),
                         partial(trusting_codec, data_dir))  # the default least: 200,000 records
    _, report = replay(log, trusting_codec(data_dir), helper=small)
    assert report.helped == 0 and report.events == 50


def test_the_replay_command_folds_a_large_log_in_two_processes_unless_told_not_to(
        log: EventLog, db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "data"
    events = chains(20)
    log.append(signed_records(data_dir, events))
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    where = ["--log", f"sqlite://{db}", "--data-dir", str(data_dir), "--partitions", str(PARTITIONS)]
    monkeypatch.setattr(audit_cli, "HELPER_MIN_RECORDS", 0)  # "large" for the test

    command = parser.parse_args(["replay", *where])
    assert command.func(command) == 0
    out = capsys.readouterr().out
    assert f"{len(events)} events folded" in out
    assert f"of {len(events)} records read and folded by a second process" in out
    assert "instances per status:" in out and "ACTIVE" in out

    alone = parser.parse_args(["replay", "--one-process", *where])
    assert alone.func(alone) == 0
    out = capsys.readouterr().out
    assert f"{len(events)} events folded" in out and "second process" not in out


def test_an_instance_crosses_to_another_process_whole(tmp_path: Path) -> None:
    models, _ = replay_of(tmp_path / "log.db", chains(1))
    inst = next(iter(models.instances.instances.values()))
    inst.more().locked, inst.more().locked_reason = True, "maintenance"
    inst.metadata = {**inst.metadata, "k": "v"}  # a new dict: the folded one is shared, never changed
    again = pickle.loads(pickle.dumps(inst, pickle.HIGHEST_PROTOCOL))
    assert again == inst and again is not inst
    assert (again.locked, again.locked_reason, again.ports, again.actions) == \
           (True, "maintenance", inst.ports, inst.actions)


def replay_of(db: Path, events: list[Event]) -> tuple[Models, ReplayReport]:
    with sqlite_log(db, PARTITIONS, ALL_TOPICS) as opened:
        opened.append(event_records(events))
        return replay(opened, Codec())
