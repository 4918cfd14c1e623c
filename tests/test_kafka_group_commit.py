"""Group commit in the Kafka engine's append: concurrent callers share transactions, yet each caller
gets its own offsets, its own errors and read-your-writes, and close() never strands a caller."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from uuid import uuid4

import pytest

from eventsvm.config import LogConfig
from eventsvm.log.factory import open_log
from eventsvm.log.port import (
    BEGINNING,
    EventLog,
    LogUnavailable,
    OutRecord,
    Record,
    UnknownTopic,
    partition_for,
)

pytestmark = pytest.mark.kafka

TOPIC = "eventsvm.test.group-commit"
THREADS = 16
JOIN_S = 60.0


@pytest.fixture
def open_kafka(kafka_bootstrap: str) -> Iterator[Callable[[], EventLog]]:
    """Opens logs on the broker, all in one namespace of their own; closes them after the test."""
    namespace = f"t{uuid4().hex[:8]}."
    opened: list[EventLog] = []

    def opener() -> EventLog:
        log = open_log(LogConfig(url=f"kafka://{kafka_bootstrap}", namespace=namespace, partitions=4))
        opened.append(log)
        return log

    yield opener
    for log in opened:
        log.close()


@pytest.fixture
def log(open_kafka: Callable[[], EventLog]) -> EventLog:
    """A log with TOPIC (4 partitions) created."""
    log = open_kafka()
    log.create_topics([TOPIC])
    return log


def _record(value: str) -> OutRecord:
    return OutRecord(TOPIC, value.split("/")[0].encode(), value.encode())


def _read_all(log: EventLog, topic: str = TOPIC) -> list[Record]:
    reader = log.reader([topic], BEGINNING)
    records: list[Record] = []
    deadline = time.monotonic() + 30
    while not reader.at_end() or not records:
        assert time.monotonic() < deadline, "reading the topic back took over 30 s"
        records += reader.poll(5000, timeout=0.2)
        if reader.at_end() and not records:
            break
    reader.close()
    return records


def _in_threads(count: int, work: Callable[[int], None]) -> None:
    """Run work(0..count-1) on `count` threads released together; re-raise the first failure."""
    start = threading.Barrier(count)
    failures: list[BaseException] = []

    def run(i: int) -> None:
        try:
            start.wait(timeout=JOIN_S)
            work(i)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    _join(threads, "appenders still running")
    if failures:
        raise failures[0]


def _join(threads: list[threading.Thread], message: str) -> None:
    deadline = time.monotonic() + JOIN_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), f"{message} ({JOIN_S:g} s on)"


def test_concurrent_appends_get_their_own_offsets_and_every_record_reads_back_once(log: EventLog) -> None:
    acknowledged: dict[tuple[int, int], bytes] = {}
    guard = threading.Lock()

    def appender(i: int) -> None:
        for n in range(15):
            # 1 to 3 records, keys spread over the partitions, so groups mix batch sizes
            batch = [_record(f"k{i}-{n % 5}/{i}/{n}/{j}") for j in range(1 + (i + n) % 3)]
            placed = log.append(batch)
            assert [p for p, _ in placed] == [partition_for(r.key, 4) for r in batch]
            ends = log.end_offsets(TOPIC)
            for record, (part, offset) in zip(batch, placed, strict=True):
                assert ends[part] > offset, "append returned before its record was readable"
                with guard:
                    assert (part, offset) not in acknowledged, f"offset {part}/{offset} handed out twice"
                    acknowledged[part, offset] = record.value
            for part in {p for p, _ in placed}:
                mine = [o for p, o in placed if p == part]
                assert mine == sorted(mine), "a batch's records lost their order within a partition"

    _in_threads(THREADS, appender)
    stored = _read_all(log)
    assert len(stored) == len(acknowledged)
    assert {(r.partition, r.offset): r.value for r in stored} == acknowledged


def _transactions_on_partition_0(log: EventLog, since: tuple[int, int]) -> tuple[int, int]:
    """(records, transactions) that reached partition 0 after `since` (its end offset and record
    count then). Each committed transaction leaves one commit marker, which takes an offset, in
    every partition it wrote to: the offsets that are no record count the transactions."""
    end = log.end_offsets(TOPIC)[0]
    records = sum(1 for r in _read_all(log) if r.partition == 0)
    return records - since[1], (end - since[0]) - (records - since[1])


def test_concurrent_appends_share_transactions_and_a_lone_one_goes_alone(log: EventLog) -> None:
    # Speed is `make bench`'s business (log.kafka.single_appends); this shows the behaviour that
    # makes concurrent appends faster, from the log itself.
    def one(value: str) -> list[OutRecord]:
        return [OutRecord(TOPIC, b"k", value.encode(), partition=0)]

    log.append(one("warm-up"))
    before = (log.end_offsets(TOPIC)[0], 1)
    serial = 20
    for n in range(serial):
        log.append(one(f"serial{n}"))
    records, transactions = _transactions_on_partition_0(log, before)
    assert (records, transactions) == (serial, serial), "a lone append is one transaction of its own"

    before = (log.end_offsets(TOPIC)[0], 1 + serial)
    per_thread = 25

    def appender(i: int) -> None:
        for n in range(per_thread):
            log.append(one(f"c{i}/{n}"))

    _in_threads(THREADS, appender)
    appends = THREADS * per_thread
    records, transactions = _transactions_on_partition_0(log, before)
    assert records == appends
    # One transaction per append is what a lock held around each transaction gives; 16 callers
    # queue behind every transaction in flight, so they share them many to one.
    assert transactions <= appends // 2, f"{appends} concurrent appends took {transactions} transactions"


def test_a_bad_batch_fails_only_its_own_caller(log: EventLog) -> None:
    refused: list[str] = []
    bad = [(UnknownTopic, OutRecord("eventsvm.test.no-such-topic", b"k", b"lost")),
           (UnknownTopic, OutRecord(TOPIC, b"k", b"lost", partition=99)),
           (LogUnavailable, OutRecord(TOPIC, b"k", b"x" * 1_100_000))]  # over Kafka's message.max.bytes

    def appender(i: int) -> None:
        for n in range(10):
            if i % 4 == 0 and n % 3 == 0:
                # a valid record beside a bad one: the whole batch is refused, and nobody else's
                error, record = bad[(n // 3) % len(bad)]
                with pytest.raises(error):
                    log.append([_record(f"refused{i}/{n}"), record])
                refused.append(f"refused{i}/{n}")
            else:
                log.append([_record(f"kept{i}/{n}/a"), _record(f"kept{i}/{n}/b")])

    _in_threads(THREADS, appender)
    values = sorted(r.value.decode() for r in _read_all(log))
    assert refused, "no caller sent a bad batch"
    assert values == sorted(f"kept{i}/{n}/{x}" for i in range(THREADS) for n in range(10) for x in "ab"
                            if not (i % 4 == 0 and n % 3 == 0))
    assert "eventsvm.test.no-such-topic" not in log.list_topics()


def test_close_fails_the_waiting_callers_instead_of_leaving_them_hanging(
    open_kafka: Callable[[], EventLog], log: EventLog
) -> None:
    acknowledged: list[bytes] = []
    endings: list[BaseException] = []
    guard = threading.Lock()
    enough, stop = threading.Event(), threading.Event()

    def appender(i: int) -> None:
        n = 0
        while not stop.is_set():  # until the log refuses: close() must end every caller
            record = _record(f"c{i}/{i}/{n}")
            try:
                log.append([record])
            except LogUnavailable as exc:
                with guard:
                    endings.append(exc)
                return
            with guard:
                acknowledged.append(record.value)
                if len(acknowledged) >= 100:
                    enough.set()
            n += 1

    threads = [threading.Thread(target=appender, args=(i,), daemon=True) for i in range(THREADS)]
    for t in threads:
        t.start()
    try:
        assert enough.wait(JOIN_S), "the appenders made no progress"
        log.close()
        _join(threads, "a caller still waits, or appends, after close()")
    finally:
        stop.set()
    assert len(endings) == THREADS
    # Callers queued behind the transaction in flight were woken and failed, not left waiting.
    assert any("closed before it was sent" in str(e) for e in endings), [str(e) for e in endings]
    with pytest.raises(LogUnavailable):
        log.append([_record("after/close")])
    # What was acknowledged is there exactly once; what was refused was never written.
    stored = sorted(r.value for r in _read_all(open_kafka()))
    assert stored == sorted(acknowledged)
