"""A fold that cannot apply an event: a dead letter with the reason and the record's position, and
the fold goes on with the next event, in every fold (a service's state, the read model, a replay,
billing's readers). Garbage on a topic no service is fed gets a letter too."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from eventsvm.app.registry import PIPELINE, host_service, pipeline_service
from eventsvm.events.codec import Codec
from eventsvm.events.model import Event, EventType, Topic
from eventsvm.log.port import BEGINNING, EventLog, OutRecord
from eventsvm.projections import billing as billing_module
from eventsvm.projections import readmodel as readmodel_module
from eventsvm.projections.billing import LedgerView, ledger_from_log
from eventsvm.projections.readmodel import FOLD_NAME, ReadModel
from eventsvm.projections.replay import model_differences, replay
from eventsvm.runtime.fold_letters import STATE_ONLY_TOPICS, letter_id
from eventsvm.runtime.runner import ServiceRunner
from eventsvm.runtime.service import Output, Service, StepContext
from eventsvm.state import instances as instances_module
from tests.factories import event_records, instance_chain, sample_event, sqlite_log

POISON = "unfoldable"
SECRET = "hunter2-not-a-real-password"


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EventLog]:
    with sqlite_log(tmp_path / "log.db", 1, Topic) as opened:
        yield opened


def events_of(log_: EventLog, codec: Codec, topic: Topic) -> list[Event]:
    log_.create_topics([str(topic)])
    reader = log_.reader([str(topic)], BEGINNING)
    try:
        return [codec.decode(r.value) for r in reader.poll(1000, timeout=0.2)]
    finally:
        reader.close()


def poisoned(kind: EventType, aggregate_id: str = POISON) -> Event:
    """A valid event of `kind` that the folds of these tests refuse."""
    event = sample_event(kind)
    event.aggregate_id = aggregate_id
    return event


# -- a service's state fold ---------------------------------------------------------------------
def evolve(state: list[str], event: Event) -> list[str]:
    if event.aggregate_id == POISON:
        raise ValueError(f"cannot apply {event.type}")
    state.append(event.aggregate_id)
    return state


def decide(state: list[str], event: Event, ctx: StepContext) -> Sequence[Output]:
    answer = poisoned(EventType.INSTANCE_AUTHENTICATED, POISON if event.body["name"] == POISON else
                      event.aggregate_id)
    answer.causation_id = event.event_id
    return [Output(answer)]


TOY: Service[list[str]] = Service(
    name="toy",
    inputs=(Topic.REQUESTED,),
    state_topics=(Topic.IDENTITY, Topic.AUTHENTICATED),
    outputs=(Topic.AUTHENTICATED,),
    initial_state=list,
    evolve=evolve,
    decide=decide,
)


def toy_runner(log_: EventLog, codec: Codec) -> ServiceRunner[list[str]]:
    return ServiceRunner(log_, TOY, codec, member_name="toy-1", poll_timeout=0.05)


def test_a_state_event_the_fold_cannot_apply_is_dead_lettered_once_and_the_fold_goes_on(
    log: EventLog,
) -> None:
    codec = Codec()
    before, bad, after = (sample_event(EventType.USER_CREATED), poisoned(EventType.USER_CREATED),
                          sample_event(EventType.PROJECT_CREATED))
    bad.body["password_hash"] = SECRET
    [_, (partition, offset), _] = log.append(event_records([before, bad, after]))
    runner = toy_runner(log, codec)
    runner.start()
    assert runner.state == [before.aggregate_id, after.aggregate_id]
    runner.rebuild()  # a rebuild folds it again, and letters it no second time
    assert runner.state == [before.aggregate_id, after.aggregate_id]
    [letter] = events_of(log, codec, Topic.DEAD_LETTER)
    assert letter.body["source_topic"] == str(Topic.IDENTITY)
    assert (letter.body["source_partition"], letter.body["source_offset"]) == (partition, offset)
    assert letter.body["group"] == "eventsvm.toy"
    assert letter.body["error_type"] == "FoldError"
    assert "ValueError: cannot apply identity.user_created" in letter.body["reason"]
    assert SECRET.encode() not in codec.encode(letter)
    runner.close()
    # another process (or this one restarted) writes the same letter, under the same id
    again = toy_runner(log, codec)
    again.start()
    assert again.state == [before.aggregate_id, after.aggregate_id]
    letters = events_of(log, codec, Topic.DEAD_LETTER)
    assert [x.event_id for x in letters] == [letter.event_id] * 2
    assert letter.event_id == letter_id("FoldError", "eventsvm.toy", str(Topic.IDENTITY), partition, offset)
    again.close()


def test_garbage_on_a_topic_no_service_is_fed_is_dead_lettered_by_its_readers(log: EventLog) -> None:
    codec = Codec()
    log.create_topics([str(Topic.IDENTITY), str(Topic.AUTHENTICATED)])
    log.append([OutRecord(str(Topic.IDENTITY), b"k", b"\x00garbage"),
                OutRecord(str(Topic.AUTHENTICATED), b"k", b"\x00garbage")])
    runner = toy_runner(log, codec)
    runner.start()
    # the identity record has no consumer to letter it; the authenticated one has (its scheduler)
    [letter] = events_of(log, codec, Topic.DEAD_LETTER)
    assert letter.body["source_topic"] == str(Topic.IDENTITY)
    assert letter.body["error_type"] == "CodecError"
    assert letter.body["payload"] == b""
    runner.close()


def test_an_output_the_service_cannot_fold_dead_letters_its_input_and_the_service_goes_on(
    log: EventLog,
) -> None:
    codec = Codec()
    runner = toy_runner(log, codec)
    runner.start()
    bad, fine = sample_event(EventType.INSTANCE_REQUESTED), sample_event(EventType.INSTANCE_REQUESTED)
    bad.body["name"] = POISON
    log.append(event_records([bad, fine]))
    for _ in range(100):
        if runner.step():
            break
    [letter] = events_of(log, codec, Topic.DEAD_LETTER)
    assert letter.aggregate_id == bad.aggregate_id and letter.body["error_type"] == "FoldError"
    assert [e.aggregate_id for e in events_of(log, codec, Topic.AUTHENTICATED)] == [fine.aggregate_id]
    assert runner.state == [fine.aggregate_id]
    runner.close()


def test_a_service_must_fold_every_topic_it_emits_onto() -> None:
    with pytest.raises(ValueError, match="decide emits onto eventsvm.instance.failed"):
        dataclasses.replace(TOY, outputs=(Topic.AUTHENTICATED, Topic.FAILED))


def test_an_output_on_a_topic_the_service_does_not_fold_dead_letters_its_input(log: EventLog) -> None:
    codec = Codec()
    failed = sample_event(EventType.INSTANCE_FAILED)
    stray = dataclasses.replace(TOY, decide=lambda _s, _e, _c: [Output(failed)])
    runner = ServiceRunner(log, stray, codec, member_name="toy-1", poll_timeout=0.05)
    runner.start()
    request = sample_event(EventType.INSTANCE_REQUESTED)
    log.append(event_records([request]))
    for _ in range(100):
        if runner.step():
            break
    [letter] = events_of(log, codec, Topic.DEAD_LETTER)
    assert letter.aggregate_id == request.aggregate_id
    assert "onto eventsvm.instance.failed, not one of its state topics" in letter.body["reason"]
    assert events_of(log, codec, Topic.FAILED) == []
    runner.close()


def test_a_service_fed_a_state_only_topic_folds_it_too() -> None:
    # only the spawner watches one (the catalog, for the snapshot files of deleted images), and it
    # folds it: its fold letters what cannot be decoded there, once, as every fold of it does
    services = [pipeline_service(name)[0] for name in PIPELINE] + [host_service("spawner", "h")]
    watched = {(s.name, str(t)) for s in services for t in s.inputs if str(t) in STATE_ONLY_TOPICS}
    assert watched == {("spawner.h", str(Topic.CATALOG))}
    assert all(Topic.CATALOG in s.state_topics for s in services if s.name == "spawner.h")


def test_garbage_on_a_watched_state_only_topic_is_lettered_once_by_the_fold(log: EventLog) -> None:
    codec = Codec()
    watching = dataclasses.replace(TOY, inputs=(Topic.REQUESTED, Topic.IDENTITY))
    runner = ServiceRunner(log, watching, codec, member_name="toy-1", poll_timeout=0.05)
    runner.start()
    log.append([OutRecord(str(Topic.IDENTITY), b"k", b"\x00garbage")])
    for _ in range(100):
        if runner.step():
            break
    [letter] = events_of(log, codec, Topic.DEAD_LETTER)
    assert letter.body["source_topic"] == str(Topic.IDENTITY) and letter.body["group"] == "eventsvm.toy"
    assert letter.event_id == letter_id("CodecError", "eventsvm.toy", str(Topic.IDENTITY), 0, 0)
    runner.close()


# -- the read model and a replay ----------------------------------------------------------------
def refusing(original: Any) -> Any:
    def fold(*args: Any) -> Any:
        event = next(a for a in args if isinstance(a, Event))
        if event.aggregate_id == POISON:
            raise KeyError("no such thing")
        return original(*args)

    return fold


@pytest.fixture
def refusing_folds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The read model's host and catalog folds and the instance fold refuse the POISON aggregate."""
    for kind in (EventType.HOST_REGISTERED, EventType.FLAVOR_CREATED):
        monkeypatch.setitem(readmodel_module._FOLDS, kind, refusing(readmodel_module._FOLDS[kind]))
    kind = EventType.INSTANCE_SCHEDULED
    name, fold = instances_module._NAMED_FOLDS[kind]  # the table the instance fold dispatches on
    monkeypatch.setitem(instances_module._NAMED_FOLDS, kind, (name, refusing(fold)))


def test_the_read_model_letters_what_it_cannot_fold_and_folds_the_rest_of_the_batch(
    log: EventLog, refusing_folds: None
) -> None:
    codec = Codec()
    chain = instance_chain()
    scheduled = next(e for e in chain if e.type == EventType.INSTANCE_SCHEDULED)
    ghost = dataclasses.replace(scheduled, aggregate_id=POISON, event_id=str(uuid.uuid4()))
    host, flavor = poisoned(EventType.HOST_REGISTERED), poisoned(EventType.FLAVOR_CREATED)
    log.append(event_records([host, flavor, ghost, *chain]))
    model = ReadModel(log, codec)
    seen: list[Event] = []
    model.listeners.append(lambda e, _t: seen.append(e))
    model.start(tail=False)
    inst = model.models.instances.get(scheduled.aggregate_id)
    assert inst is not None and inst.status == "ACTIVE"  # the events after the poison were folded
    assert host.body["name"] not in model.models.hosts
    letters = events_of(log, codec, Topic.DEAD_LETTER)
    assert {(x.body["source_topic"], x.body["group"], x.body["error_type"]) for x in letters} == {
        (str(Topic.HOSTS), FOLD_NAME, "FoldError"),
        (str(Topic.CATALOG), FOLD_NAME, "FoldError"),
        (str(Topic.SCHEDULED), FOLD_NAME, "FoldError"),
    }
    assert all("KeyError" in x.body["reason"] for x in letters)
    model.catch_up(to_end=True)
    assert len(model.models.dead_letters) == 3
    # another read model (another API replica) letters them again: still three, counted once
    other = ReadModel(log, codec)
    other.start(tail=False)
    other.close()
    model.catch_up(to_end=True)
    assert len(events_of(log, codec, Topic.DEAD_LETTER)) == 6
    assert len(model.models.dead_letters) == 3
    assert sum(e.type == EventType.DEAD_LETTER_RECORDED for e in seen) == 3
    # a replay skips the same records, counts them, and agrees with the live model
    replayed, report = replay(log, codec)
    assert report.unfoldable == 3
    assert model_differences(model.models, replayed) == []
    model.close()


def test_an_appended_event_the_read_model_cannot_fold_still_returns_and_is_lettered(
    log: EventLog, refusing_folds: None
) -> None:
    codec = Codec()
    model = ReadModel(log, codec)
    model.start(tail=False)
    model.append([poisoned(EventType.FLAVOR_CREATED)])
    [letter] = events_of(log, codec, Topic.DEAD_LETTER)
    assert letter.body["source_topic"] == str(Topic.CATALOG)
    model.close()


# -- billing's readers --------------------------------------------------------------------------
def test_billing_readers_skip_a_record_the_ledger_cannot_fold_and_read_on(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(billing_module, "evolve_ledger", refusing(billing_module.evolve_ledger))
    codec = Codec()
    opened, bad, closed = (sample_event(EventType.USAGE_OPENED), poisoned(EventType.USAGE_OPENED),
                           sample_event(EventType.USAGE_CLOSED))
    closed.aggregate_id = "another-instance"
    log.append(event_records([opened, bad, closed]))
    assert set(ledger_from_log(log, codec).usages) == {opened.aggregate_id, closed.aggregate_id}
    view = LedgerView(log, codec)
    assert set(view.current().usages) == {opened.aggregate_id, closed.aggregate_id}
    view.close()
