"""A member that takes partitions over decides on them only once its state holds everything their
last owner committed. On Kafka a commit is acknowledged when the coordinator has logged it; the
markers that make its records readable reach each partition afterwards, and the group's offsets
may become stable before the state topics' records do (a broker restarted between the two, in the
chaos run that found it). A state read to the committed end then stopped in front of the last
owner's final decisions, and the resolver handed the same fixed IPs out a second time.

Here the last owner is a transactional producer of the test's own whose transaction is still
open when the runner takes the partitions: its outcome is what the runner must wait for."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from uuid import uuid4

import pytest
from confluent_kafka import Producer

from eventsvm.config import LogConfig
from eventsvm.events.codec import Codec
from eventsvm.events.model import Event, EventType, Topic
from eventsvm.log.factory import open_log
from eventsvm.log.kafka import KafkaLog
from eventsvm.log.port import OutRecord
from eventsvm.runtime.runner import ServiceRunner
from eventsvm.runtime.service import Output, StepContext
from tests.factories import sample_event
from tests.unit.test_fold_letters import TOY

pytestmark = pytest.mark.kafka


@pytest.fixture
def log(kafka_bootstrap: str) -> Iterator[KafkaLog]:
    opened = open_log(LogConfig(url=f"kafka://{kafka_bootstrap}", namespace=f"t{uuid4().hex[:8]}.",
                                partitions=2))
    assert isinstance(opened, KafkaLog)
    yield opened
    opened.close()


class _Decisions:
    """The toy service, remembering what its state held at each decision."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[str], float]] = []

    def decide(self, state: list[str], event: Event, ctx: StepContext) -> Sequence[Output]:
        self.seen.append((event.aggregate_id, list(state), time.monotonic()))
        answer = sample_event(EventType.INSTANCE_AUTHENTICATED)
        answer.aggregate_id = event.aggregate_id
        answer.causation_id = event.event_id
        return [Output(answer)]


def _open_transaction(log: KafkaLog, codec: Codec, aggregate_id: str) -> Producer:
    """The last owner's final step: a decision on a state topic, written, not yet ended."""
    producer = Producer(log.client_config(**{"transactional.id": f"last-owner-{uuid4().hex[:8]}",
                                             "transaction.timeout.ms": 60000}))
    producer.init_transactions(30)
    producer.begin_transaction()
    decision = sample_event(EventType.INSTANCE_AUTHENTICATED)
    decision.aggregate_id = aggregate_id
    producer.produce(log.physical(str(Topic.AUTHENTICATED)), codec.encode(decision), aggregate_id.encode())
    producer.flush(30)
    return producer


def _decide_one(log: KafkaLog, codec: Codec, runner: ServiceRunner[list[str]],
                decisions: _Decisions) -> tuple[str, list[str], float]:
    request = sample_event(EventType.INSTANCE_REQUESTED)
    log.append([OutRecord(str(Topic.REQUESTED), request.aggregate_id.encode(), codec.encode(request))])
    log.settle()
    deadline = time.monotonic() + 60
    while not any(seen[0] == request.aggregate_id for seen in decisions.seen):
        assert time.monotonic() < deadline, "the request was never decided"
        runner.step()
    return next(seen for seen in decisions.seen if seen[0] == request.aggregate_id)


@pytest.mark.parametrize("outcome", ["committed", "aborted"])
def test_partitions_taken_over_are_decided_on_once_the_last_owners_transaction_has_ended(
        log: KafkaLog, outcome: str) -> None:
    codec = Codec()
    log.create_topics([str(t) for t in (*TOY.inputs, *TOY.state_topics, *TOY.outputs)])
    producer = _open_transaction(log, codec, "decided-by-the-last-owner")
    decisions = _Decisions()
    runner = ServiceRunner(log, replace(TOY, decide=decisions.decide), codec,
                           member_name=f"toy-{uuid4().hex[:6]}", poll_timeout=0.05)
    ended_at: list[float] = []

    def end_it() -> None:
        time.sleep(3.0)
        ended_at.append(time.monotonic())
        if outcome == "committed":
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)

    ending = threading.Thread(target=end_it)
    runner.start()
    try:
        ending.start()
        _, state, decided_at = _decide_one(log, codec, runner, decisions)
        ending.join()
        assert decided_at > ended_at[0], "decided while the last owner's transaction was open"
        if outcome == "committed":
            assert "decided-by-the-last-owner" in state
        else:
            assert "decided-by-the-last-owner" not in state
        # once taken over, the next decision waits for nothing
        started = time.monotonic()
        _, state, decided_at = _decide_one(log, codec, runner, decisions)
        assert decided_at - started < 5
    finally:
        ending.join()
        runner.close()
