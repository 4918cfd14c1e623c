"""A Kafka reader asks the broker for its partitions' ends when asked whether it is at the end, at
most once per poll, and never while only polling: a service's state reader is polled before every
step and the API's tail every 0.2 s, and each ListOffsets round trip cost ~0.7 ms of CPU and ~4 ms
of waiting. An idle service asks nothing, and what at_end says is as fresh as before."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest

from eventsvm.config import LogConfig
from eventsvm.events.codec import Codec
from eventsvm.events.model import EventType, Topic
from eventsvm.log.factory import open_log
from eventsvm.log.kafka import KafkaLog
from eventsvm.log.port import BEGINNING, OutRecord, Reader
from eventsvm.projections import readmodel as readmodel_module
from eventsvm.projections.readmodel import ReadModel
from eventsvm.runtime import runner as runner_module
from eventsvm.runtime.runner import ServiceRunner
from tests.factories import sample_event
from tests.unit.test_fold_letters import TOY

pytestmark = pytest.mark.kafka

TOPIC = "eventsvm.test.reader-ends"


@pytest.fixture
def log(kafka_bootstrap: str) -> Iterator[KafkaLog]:
    opened = open_log(LogConfig(url=f"kafka://{kafka_bootstrap}", namespace=f"t{uuid4().hex[:8]}.",
                                partitions=2))
    assert isinstance(opened, KafkaLog)
    opened.create_topics([TOPIC])
    yield opened
    opened.close()


class _Asked:
    """Counts the log's ListOffsets requests for the latest offsets (the ends)."""

    def __init__(self, log: KafkaLog, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = log.list_offsets

        def counted(tps: Any, spec: Any, *isolation: Any) -> dict[tuple[str, int], int]:
            self.count += 1
            return real(tps, spec, *isolation)

        monkeypatch.setattr(log, "list_offsets", counted)


def _append(log: KafkaLog, *values: str) -> None:
    log.append([OutRecord(TOPIC, v.encode(), v.encode()) for v in values])
    log.settle()  # readable by read_committed readers before going on


def _drain(reader: Reader, want: int) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + 30
    while len(got) < want and time.monotonic() < deadline:
        got += [r.value.decode() for r in reader.poll(100, timeout=0.2)]
    return got


def test_polling_asks_nothing_and_at_end_asks_once_a_poll(
        log: KafkaLog, monkeypatch: pytest.MonkeyPatch) -> None:
    _append(log, "a", "b", "c")
    reader = log.reader([TOPIC], BEGINNING)
    try:
        asked = _Asked(log, monkeypatch)
        assert sorted(_drain(reader, 3)) == ["a", "b", "c"]
        for _ in range(5):  # caught up: an idle reader polled in a loop
            assert reader.poll(100, timeout=0.05) == []
        assert asked.count == 0
        assert reader.at_end() and reader.at_end()
        assert asked.count == 1  # once for the last poll, not once a call

        # a record committed after the last poll: the next at_end (after a poll) sees the new end
        _append(log, "d")
        got = reader.poll(100, timeout=0.5)
        if got:  # the poll brought it already: at the end again
            assert [r.value for r in got] == [b"d"] and reader.at_end()
        else:  # not yet delivered: the broker's end says there is more, so not at the end
            assert not reader.at_end()
            assert _drain(reader, 1) == ["d"] and reader.at_end()
        assert asked.count >= 2
    finally:
        reader.close()


def test_at_end_still_waits_for_what_was_committed_before_the_poll(log: KafkaLog) -> None:
    # read-your-writes across processes rests on this: a reader caught up before another writer's
    # commit must not say it is at the end, after its next poll, until it has read that commit
    _append(log, "a")
    reader = log.reader([TOPIC], BEGINNING)
    try:
        assert _drain(reader, 1) == ["a"] and reader.at_end()
        _append(log, "b", "c")
        got = [r.value.decode() for r in reader.poll(100, timeout=0.0)]
        deadline = time.monotonic() + 30
        while not reader.at_end() and time.monotonic() < deadline:
            got += [r.value.decode() for r in reader.poll(100, timeout=0.2)]
        assert sorted(got) == ["b", "c"]
    finally:
        reader.close()


def test_an_idle_service_asks_for_no_ends_and_settles_again_once_it_read_something(
        log: KafkaLog, monkeypatch: pytest.MonkeyPatch) -> None:
    settled: list[int] = []

    def settle(state: list[str]) -> list[str]:
        settled.append(len(state))
        return state

    codec = Codec()
    runner = ServiceRunner(log, dataclasses.replace(TOY, settle=settle), codec, member_name="toy-1",
                           poll_timeout=0.05)
    runner.start()  # caught up to the end, and settled once
    try:
        assert settled
        # the first steps after joining catch up to the end once more, for the partitions assigned
        warm_until = time.monotonic() + 1.0
        while time.monotonic() < warm_until:
            assert runner.step() == 0
        asked, before = _Asked(log, monkeypatch), len(settled)
        for _ in range(10):
            assert runner.step() == 0
        assert asked.count == 0 and len(settled) == before

        # a request answered: the state changed, so the next step's catch-up settles it again
        request = sample_event(EventType.INSTANCE_REQUESTED)
        log.append([OutRecord(str(Topic.REQUESTED), request.aggregate_id.encode(), codec.encode(request))])
        log.settle()
        deadline = time.monotonic() + 30
        while runner.step() == 0 and time.monotonic() < deadline:
            pass
        runner.step()
        assert len(settled) > before
    finally:
        runner.close()


def _request(log: KafkaLog, codec: Codec) -> None:
    request = sample_event(EventType.INSTANCE_REQUESTED)
    log.append([OutRecord(str(Topic.REQUESTED), request.aggregate_id.encode(), codec.encode(request))])
    log.settle()


def test_a_busy_service_settles_at_most_once_an_interval(
        log: KafkaLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each busy step changes the state; settling it (forgetting what is past its retention) after
    every one asked the broker for the ends each time. It now waits SETTLE_EVERY_S, then settles."""
    monkeypatch.setattr(runner_module, "SETTLE_EVERY_S", 5.0)
    settled: list[float] = []

    def settle(state: list[str]) -> list[str]:
        settled.append(time.monotonic())
        return state

    codec = Codec()
    runner = ServiceRunner(log, dataclasses.replace(TOY, settle=settle), codec, member_name="toy-1",
                           poll_timeout=0.05)
    runner.start()
    try:
        warm_until = time.monotonic() + 1.0  # the joining steps catch up to the end, and settle
        while time.monotonic() < warm_until:
            runner.step()
        assert runner._reader is not None
        ends_asked = 0
        real_at_end = runner._reader.at_end

        def at_end() -> bool:
            nonlocal ends_asked
            ends_asked += 1
            return real_at_end()

        monkeypatch.setattr(runner._reader, "at_end", at_end)
        before = len(settled)
        for _ in range(3):  # three busy steps, each with its answer folded after it
            _request(log, codec)
            deadline = time.monotonic() + 30
            while runner.step() == 0 and time.monotonic() < deadline:
                pass
        for _ in range(3):
            runner.step()
        assert len(runner.state) >= 3, "the answers were folded"
        if time.monotonic() - settled[-1] < 5.0:  # else this machine was too slow to tell
            assert len(settled) == before and ends_asked == 0

        monkeypatch.setattr(runner_module, "SETTLE_EVERY_S", 0.0)  # the interval is over
        runner.step()
        assert len(settled) == before + 1 and ends_asked == 1
    finally:
        runner.close()


def test_a_busy_read_model_tail_settles_at_most_once_an_interval(
        log: KafkaLog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readmodel_module, "SETTLE_EVERY_S", 5.0)
    codec = Codec()
    model = ReadModel(log, codec)
    model.start(tail=True)
    settled: list[float] = []
    real_settle = model.models.settle

    def settle() -> None:
        settled.append(time.monotonic())
        real_settle()

    try:
        monkeypatch.setattr(model.models, "settle", settle)
        started = time.monotonic()
        for _ in range(3):
            _request(log, codec)
            time.sleep(0.3)  # the tail folds it, then polls empty: it would have settled here
        assert model.sync(timeout=10) and len(model.models.instances.instances) >= 3
        if time.monotonic() - started < 4.0:
            assert settled == []
        monkeypatch.setattr(readmodel_module, "SETTLE_EVERY_S", 0.0)
        deadline = time.monotonic() + 10
        while not settled and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(settled) == 1, "an idle tail settles once the interval is over"
    finally:
        model.close()


def test_an_idle_read_model_tail_asks_for_no_ends(log: KafkaLog, monkeypatch: pytest.MonkeyPatch) -> None:
    model = ReadModel(log, Codec())
    model.start(tail=True)
    try:
        time.sleep(1.0)  # the tail's first polls: what start left, settled once
        asked = _Asked(log, monkeypatch)
        time.sleep(1.5)  # ~7 polls of the idle tail
        assert asked.count == 0
    finally:
        model.close()
