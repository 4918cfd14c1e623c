"""A replay in two processes on the real broker: the helper is spawned (this process holds a Kafka
client's threads, which a fork would not carry), opens its own reader on the upper half of the
instance partitions, and the models, the report and the next seal are what one process makes."""

from __future__ import annotations

import random
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from uuid import uuid4

import pytest

from eventsvm.app.writers import key_dir, trusting_codec
from eventsvm.config import LogConfig
from eventsvm.events.model import Event
from eventsvm.log.factory import open_log
from eventsvm.log.port import EventLog
from eventsvm.projections.readmodel import ALL_TOPICS
from eventsvm.projections.replay import ReplayHelper, model_differences, replay
from eventsvm.projections.seal import Sealing, SealStore
from tests.factories import instance_chain, signed_records
from tests.unit import test_replay_helper

pytestmark = pytest.mark.kafka


@pytest.fixture
def config(kafka_bootstrap: str) -> LogConfig:
    return LogConfig(url=f"kafka://{kafka_bootstrap}", namespace=f"t{uuid4().hex[:8]}.", partitions=4)


@pytest.fixture
def log(config: LogConfig) -> Iterator[EventLog]:
    opened = open_log(config)
    opened.create_topics([str(t) for t in ALL_TOPICS])
    yield opened
    opened.close()


def chains(count: int) -> list[Event]:
    rng = random.Random(11)
    return [e for _ in range(count) for e in instance_chain(rng)]


def test_a_spawned_helper_replays_half_of_a_kafka_log_under_the_seal(
        log: EventLog, config: LogConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "data"
    events = chains(40)
    log.append(signed_records(data_dir, events))
    log.settle()
    codec = trusting_codec(data_dir)
    first = Sealing()
    one, alone = replay(log, codec, sealing=first)  # verifying every signature, and sealing
    store = SealStore(data_dir, key_dir(data_dir), config.identity)
    store.save(first)
    told = tmp_path / "started"
    monkeypatch.setattr(test_replay_helper, "SET_IN_THE_PARENT", True)
    # a fork is what it asks for; this process runs librdkafka's threads, so it is spawned
    helper = ReplayHelper(partial(test_replay_helper.open_and_tell, config, told),
                          partial(trusting_codec, data_dir), 0, "fork")

    second = Sealing(store.load(log))
    two, helped = replay(log, trusting_codec(data_dir), sealing=second, helper=helper)
    assert model_differences(two, one) == []
    assert (helped.events_by_topic, helped.instances_by_status, helped.records_read) == \
           (alone.events_by_topic, alone.instances_by_status, alone.records_read)
    assert helped.sealed == len(events) and 0 < helped.helped < len(events)
    assert second.seal("log").partitions == first.seal("log").partitions
    assert told.read_text() == "spawned"
