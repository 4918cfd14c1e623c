"""The API's usage book (eventsvm.projections.usage): what each project's live servers hold, kept
as the read model folds, is what a walk over every server counts, whatever the events were."""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventsvm.api.compute_usage import project_usage
from eventsvm.events.codec import Codec
from eventsvm.events.model import Event, EventType
from eventsvm.log.port import EventLog
from eventsvm.projections.readmodel import ALL_TOPICS, ReadModel
from eventsvm.projections.usage import count_usage
from tests.factories import deletion_chain, event_records, instance_chain, sample_event, sqlite_log

PROJECTS = ("p-alpha", "p-beta", "p-gamma")
# every instance event type but the boot flow's (instance_chain makes those)
OTHER_KINDS = sorted((t for t in EventType if t.value.startswith("instance.")), key=lambda t: t.value)


def _lifecycles(rng: random.Random, servers: int, extra: int) -> list[Event]:
    """Boots of `servers` servers in three projects (flavors of any size), deletions of some, and
    `extra` events of every other instance kind (moves, failures, updates ...) aimed at them, all
    interleaved."""
    streams: list[list[Event]] = []
    ids = []
    for _ in range(servers):
        project = rng.choice(PROJECTS)
        chain = [dataclasses.replace(e, project_id=project) for e in instance_chain(rng, rng.randrange(1, 4))]
        chain = chain[:rng.randrange(1, len(chain) + 1)]  # some never get past a step
        if chain[-1].type == EventType.INSTANCE_SPAWNED and rng.random() < 0.4:
            chain += deletion_chain(chain[-1], rng)
        streams.append(chain)
        ids.append((chain[0].aggregate_id, project))
    for _ in range(extra):
        aggregate, project = rng.choice(ids)
        kind = rng.choice(OTHER_KINDS)
        sample = sample_event(kind, rng)
        streams.append([dataclasses.replace(sample, aggregate_id=aggregate, project_id=project,
                                            event_id=str(uuid.uuid4()), sequence=rng.randrange(2, 12))])
    out: list[Event] = []
    while streams:
        stream = rng.choice(streams)
        out.append(stream.pop(0))
        if not stream:
            streams.remove(stream)
    return out


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EventLog]:
    with sqlite_log(tmp_path / "log.db", 2, ALL_TOPICS) as opened:
        yield opened


def _agrees(model: ReadModel) -> None:
    models = model.models
    assert models.usage is not None
    for project in PROJECTS:
        assert models.usage.usage(models, project) == count_usage(models, project), project


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1 << 30), servers=st.integers(1, 12), extra=st.integers(0, 20),
       cut=st.integers(0, 200))
def test_the_book_is_the_count_after_any_events(tmp_path_factory: pytest.TempPathFactory, seed: int,
                                                servers: int, extra: int, cut: int) -> None:
    rng = random.Random(seed)
    events = _lifecycles(rng, servers, extra)
    with sqlite_log(tmp_path_factory.mktemp("usage") / "log.db", 2, ALL_TOPICS) as log_:
        model = ReadModel(log_, Codec())
        split = cut % (len(events) + 1)
        log_.append(event_records(events[:split]))  # read at start
        model.start(tail=False)
        _agrees(model)
        for event in events[split:]:  # then folded one at a time, asked after each
            model.append([event])
            _agrees(model)
        # retention: the deleted servers forgotten leave no trace in the book
        model.models.instances.deleted_retention_ms = 0
        with model.lock:
            model.models.settle()
        _agrees(model)


def test_a_create_asks_the_book_not_a_walk(log: EventLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """With 300 servers in the read model, a later ask recounts only what changed since."""
    rng = random.Random(3)
    events = [dataclasses.replace(e, project_id=PROJECTS[0]) for _ in range(300) for e in instance_chain(rng)]
    log.append(event_records(events))
    model = ReadModel(log, Codec())
    model.start(tail=False)
    assert model.models.usage is not None
    first = model.models.usage.usage(model.models, PROJECTS[0])
    assert first.instances == 300
    looked_up: list[str] = []
    instances = model.models.instances.instances
    monkeypatch.setattr(model.models.instances, "instances", _Counting(dict(instances), looked_up))
    extra = [dataclasses.replace(e, project_id=PROJECTS[0]) for e in instance_chain(rng)]
    model.append(extra)
    assert project_usage(model.models, PROJECTS[0]).instances == 301  # what a create asks
    assert set(looked_up) == {extra[0].aggregate_id}  # the fold's lookups and the book's, none other


def test_a_server_gone_before_the_book_counted_its_deletion_leaves_nothing_counted(log: EventLog) -> None:
    """The book reads a server's project from the server when it takes it off: settle hands it the
    servers it forgets, and a server dropped by anything else makes it count afresh."""
    rng = random.Random(8)
    chains = [[dataclasses.replace(e, project_id=PROJECTS[0]) for e in instance_chain(rng)] for _ in range(3)]
    log.append(event_records([e for chain in chains for e in chain]))
    model = ReadModel(log, Codec())
    model.start(tail=False)
    models = model.models
    assert models.usage is not None and models.usage.usage(models, PROJECTS[0]).instances == 3
    for chain in chains[:2]:
        model.append(deletion_chain(chain[-1], rng))  # folded, not yet counted: no one asked
    models.instances.deleted_retention_ms = 0
    with model.lock:
        models.settle()
    assert models.usage.usage(models, PROJECTS[0]) == count_usage(models, PROJECTS[0])
    assert models.usage.usage(models, PROJECTS[0]).instances == 1
    # a server dropped from the projection behind the book's back: counted again from scratch
    survivor = chains[2][0].aggregate_id
    model.append(deletion_chain(chains[2][-1], rng))
    del models.instances.instances[survivor]
    models.usage.mark([survivor])
    assert models.usage.usage(models, PROJECTS[0]).instances == 0
    assert models.usage.totals == {} and models.usage.held == {}


class _Counting(dict[str, object]):
    """The instances dict, noting each id looked up with get(), and refusing a walk over them all."""

    def __init__(self, items: Mapping[str, object], seen: list[str]) -> None:
        super().__init__(items)
        self.seen = seen

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.seen.append(key)
        return super().get(key, default)

    def values(self) -> Any:
        raise AssertionError("a walk over every server")

    items = values
    __iter__ = values
