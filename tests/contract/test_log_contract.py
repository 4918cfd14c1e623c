"""The behaviours every EventLog engine must have (DESIGN §3); each test runs on SQLite and Kafka."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from eventsvm.config import LogConfig
from eventsvm.log.factory import open_log
from eventsvm.log.port import (
    BEGINNING,
    END,
    Fenced,
    GroupMember,
    LogUnavailable,
    MemberDead,
    OutRecord,
    Reader,
    Record,
    UnknownTopic,
    partition_for,
)

# Each test takes seconds (the Kafka silent-member ones ~8 s); its own deadlines add up to under a
# minute, so a test still running after 90 s is stuck, not slow.
pytestmark = pytest.mark.timeout(90)


def drain(reader: Reader, limit_s: float = 10.0) -> list[Record]:
    """Everything `reader` can read until it reports the end; fails the test after `limit_s`."""
    found: list[Record] = []
    deadline = time.monotonic() + limit_s
    while True:
        found += reader.poll(timeout=0.1)
        if reader.at_end():
            return found
        assert time.monotonic() < deadline, f"reader not at the end after {limit_s} s ({len(found)} read)"


def poll_until(members: list[GroupMember], done: Callable[[], bool], limit_s: float = 15.0,
               max_records: int = 1000) -> list[list[Record]]:
    """Poll every member in turn until `done()`; what each member returned meanwhile."""
    got: list[list[Record]] = [[] for _ in members]
    deadline = time.monotonic() + limit_s
    while not done():
        assert time.monotonic() < deadline, f"condition not reached within {limit_s} s"
        for i, member in enumerate(members):
            got[i] += member.poll(max_records=max_records, timeout=0.05)
    return got


def first_records(member: GroupMember, count: int, limit_s: float = 15.0) -> list[Record]:
    records: list[Record] = []
    deadline = time.monotonic() + limit_s
    while len(records) < count:
        assert time.monotonic() < deadline, f"only {len(records)} of {count} records within {limit_s} s"
        records += member.poll(timeout=0.1)
    return records


def values(records: list[Record]) -> list[bytes]:
    return [r.value for r in records]


def keyed(topic: str, count: int, keys: int = 5, prefix: str = "v") -> list[OutRecord]:
    return [OutRecord(topic, f"k{i % keys}".encode(), f"{prefix}{i}".encode()) for i in range(count)]


# --- topics and append -----------------------------------------------------------------------------


def test_topics_get_the_configured_partitions_and_creating_them_again_changes_nothing(engine):
    log = engine.open(partitions=3)
    log.create_topics(["orders", "audit"])
    log.create_topics(["wide"], partitions=2)
    log.create_topics(["orders", "wide"], partitions=5)

    assert log.list_topics() == ["audit", "orders", "wide"]
    assert [log.partitions(t) for t in ("orders", "audit", "wide")] == [3, 3, 2]
    with pytest.raises(UnknownTopic):
        log.partitions("nothing-here")


def test_appended_records_read_back_identical_with_dense_offsets(engine):
    log = engine.open(partitions=3)
    log.create_topics(["t"])
    stamp = int(time.time() * 1000) - 5_000
    batch = [OutRecord("t", f"k{i}".encode(), f"v{i}".encode(), timestamp_ms=stamp + i) for i in range(9)]
    batch += [OutRecord("t", None, b"to-two", partition=2, timestamp_ms=stamp)]
    placed = log.append(batch)

    assert placed[-1][0] == 2
    assert [p for p, _ in placed[:9]] == [partition_for(r.key, 3) for r in batch[:9]]
    ends = log.end_offsets("t")
    for part in range(3):
        # Within one batch a partition's offsets follow the batch order from 0; across batches
        # Kafka's transaction markers may leave gaps, so only "past the last record" is promised.
        offsets = [o for p, o in placed if p == part]
        assert offsets == list(range(len(offsets)))
        assert ends[part] > max(offsets, default=-1)

    read = {(r.partition, r.offset): r for r in drain(log.reader(["t"]))}
    assert len(read) == len(batch)
    for sent, (part, offset) in zip(batch, placed, strict=True):
        got = read[part, offset]
        assert (got.topic, got.key, got.value) == ("t", sent.key, sent.value)
        assert got.timestamp_ms == sent.timestamp_ms


def test_append_stamps_records_with_the_current_time_by_default(engine):
    log = engine.open(partitions=1)
    log.create_topics(["t"])
    before = int(time.time() * 1000)
    log.append([OutRecord("t", b"k", b"v")])
    (record,) = drain(log.reader(["t"]))
    assert before - 1_000 <= record.timestamp_ms <= int(time.time() * 1000) + 1_000


def test_a_batch_naming_a_missing_topic_writes_nothing(engine):
    log = engine.open(partitions=2)
    log.create_topics(["t"])
    with pytest.raises(UnknownTopic):
        log.append([OutRecord("t", b"k1", b"first"), OutRecord("missing", b"k", b"x"),
                    OutRecord("t", b"k2", b"last")])

    assert log.end_offsets("t") == {0: 0, 1: 0}
    assert drain(log.reader(["t"])) == []
    assert "missing" not in log.list_topics()


def test_what_a_log_appended_is_readable_by_another_as_soon_as_it_closed(engine):
    writer = engine.open(partitions=2)
    writer.create_topics(["t"])
    for i in range(3):  # consecutive transactions (on Kafka by producers taking turns)
        writer.append(keyed("t", 10, prefix=f"b{i}-"))
    assert sum(writer.end_offsets("t").values()) >= 30  # read-your-writes in the same object
    writer.close()

    other = engine.open(partitions=2)
    assert len(drain(other.reader(["t"]))) == 30


def test_records_of_one_key_stay_in_order_in_one_partition(engine):
    log = engine.open(partitions=4)
    log.create_topics(["t"])
    for batch in range(3):
        log.append(keyed("t", 20, keys=6, prefix=f"{batch}-"))

    by_key: dict[bytes, list[Record]] = {}
    for record in drain(log.reader(["t"])):
        by_key.setdefault(record.key or b"", []).append(record)
    assert len(by_key) == 6
    for key, records in by_key.items():
        assert {r.partition for r in records} == {partition_for(key, 4)}
        records.sort(key=lambda r: r.offset)
        sent = [f"{b}-{i}".encode() for b in range(3) for i in range(20) if f"k{i % 6}".encode() == key]
        assert values(records) == sent


# --- replay --------------------------------------------------------------------------------------


def test_reader_from_the_beginning_reads_everything_and_then_is_at_end(engine):
    log = engine.open(partitions=2)
    log.create_topics(["t", "empty"])
    log.append([OutRecord("t", None, f"v{i}".encode(), partition=0) for i in range(3)])

    empty = log.reader(["empty"])
    assert empty.poll(timeout=0.2) == []
    assert empty.at_end()

    reader = log.reader(["t"], start=BEGINNING)
    first = reader.poll(max_records=1, timeout=5)
    assert values(first) == [b"v0"]
    assert not reader.at_end()
    assert values(first + drain(reader)) == [b"v0", b"v1", b"v2"]


def test_a_reader_past_the_written_ends_has_read_everything_appended_before(engine):
    log = engine.open(partitions=2)
    log.create_topics(["t"])
    log.append(keyed("t", 5))
    committed = log.ends(["t"])
    written = log.written_ends(["t"])
    # nothing is left open: past every record written is past every record committed
    assert written == committed and sum(written.values()) >= 5
    reader = log.reader(["t"], start=BEGINNING)
    got = drain(reader)
    assert sorted(values(got)) == sorted(values(keyed("t", 5)))
    positions = reader.positions()
    assert all(positions[tp] >= end for tp, end in written.items())


def test_reader_from_the_end_sees_only_what_is_appended_later(engine):
    log = engine.open(partitions=2)
    log.create_topics(["t"])
    log.append(keyed("t", 4, prefix="old"))
    reader = log.reader(["t"], start=END)
    assert reader.poll(timeout=0.2) == []
    log.append(keyed("t", 3, prefix="new"))
    assert sorted(values(drain(reader))) == [b"new0", b"new1", b"new2"]


def test_reader_from_a_timestamp_starts_at_the_first_record_that_late_in_each_partition(engine):
    log = engine.open(partitions=2)
    log.create_topics(["t"])
    base = int(time.time() * 1000) - 60_000
    log.append([OutRecord("t", None, f"p{p}-{i}".encode(), partition=p, timestamp_ms=base + i * 1_000)
                for p in range(2) for i in range(4)])

    late = drain(log.reader(["t"], start=base + 2_000))
    assert sorted(values(late)) == [b"p0-2", b"p0-3", b"p1-2", b"p1-3"]
    assert drain(log.reader(["t"], start=base + 10_000)) == []


def test_reader_on_chosen_partitions_reads_only_those(engine):
    log = engine.open(partitions=3)
    log.create_topics(["t"])
    log.append([OutRecord("t", None, f"p{p}".encode(), partition=p) for p in range(3)])
    assert values(drain(log.reader(["t"], partitions=[("t", 1)]))) == [b"p1"]


# --- consumer groups ------------------------------------------------------------------------------


def test_two_members_split_the_partitions_and_are_told_what_they_own(engine):
    log = engine.open(partitions=4)
    log.create_topics(["t"])
    events: list[list[tuple[str, set]]] = [[], []]

    def member(i: int) -> GroupMember:
        return log.member("g", ["t"], member_name=f"m{i}",
                          on_assign=lambda tps: events[i].append(("assign", tps)),
                          on_revoke=lambda tps: events[i].append(("revoke", tps)))

    a, b = member(0), member(1)
    everything = {("t", p) for p in range(4)}
    poll_until([a, b], lambda: a.assignment() | b.assignment() == everything
               and not a.assignment() & b.assignment() and bool(a.assignment()) and bool(b.assignment()))
    for m, told in zip([a, b], events, strict=True):
        owned: set = set()
        for kind, tps in told:
            owned = owned | tps if kind == "assign" else owned - tps
        assert owned == m.assignment()

    log.append(keyed("t", 40, keys=10))
    seen: list[list[Record]] = [[], []]
    deadline = time.monotonic() + 10
    while len(seen[0]) + len(seen[1]) < 40:
        assert time.monotonic() < deadline
        for i, m in enumerate([a, b]):
            seen[i] += m.poll(timeout=0.05)
    assert sorted(values(seen[0] + seen[1])) == sorted(f"v{i}".encode() for i in range(40))
    for m, records in zip([a, b], seen, strict=True):
        assert {(r.topic, r.partition) for r in records} <= m.assignment()


def test_a_member_that_leaves_hands_its_partitions_over_from_its_committed_offsets(engine):
    log = engine.open(partitions=4)
    log.create_topics(["t"])
    a, b = log.member("g", ["t"], member_name="a"), log.member("g", ["t"], member_name="b")
    poll_until([a, b], lambda: len(a.assignment()) == 2 and len(b.assignment()) == 2)
    log.append(keyed("t", 40, keys=10))

    a_records = first_records(a, 1)
    done_by_a = a_records[: len(a_records) // 2]
    a.commit_step([], done_by_a)
    a.close()

    everything = {("t", p) for p in range(4)}
    left_at = time.monotonic()
    (b_records,) = poll_until([b], lambda: b.assignment() == everything, limit_s=8)
    assert time.monotonic() - left_at < 8, "a closed member must leave at once, not after a session timeout"
    expected = sorted(set(values(keyed("t", 40, keys=10))) - set(values(done_by_a)))
    b_records += first_records(b, len(expected) - len(b_records))
    assert sorted(values(b_records)) == expected


def test_committed_offsets_survive_closing_and_reopening_the_log(engine):
    first = engine.open(partitions=2)
    first.create_topics(["t"])
    first.append(keyed("t", 12, keys=4))
    member = first.member("g", ["t"], member_name="m")
    records = first_records(member, 12)
    member.commit_step([], records[:5])
    committed = first.committed("g", "t")
    assert sum(committed.values()) == 5
    first.close()

    again = engine.open(partitions=2)
    assert again.committed("g", "t") == committed
    assert again.committed("other-group", "t") == {}
    member = again.member("g", ["t"], member_name="m")
    rest = first_records(member, 7)
    assert sorted(values(rest)) == sorted(values(records[5:]))
    assert member.poll(timeout=0.3) == []


def test_a_member_given_partitions_reads_only_those_and_commits_under_its_group(engine):
    log = engine.open(partitions=3)
    log.create_topics(["t"])
    log.append([OutRecord("t", None, f"p{p}-{i}".encode(), partition=p) for p in range(3) for i in range(2)])
    member = log.member("g", ["t"], member_name="manual", partitions=[("t", 1)])
    records = first_records(member, 2)
    assert member.assignment() == {("t", 1)}
    assert values(records) == [b"p1-0", b"p1-1"]
    assert member.poll(timeout=0.3) == []
    member.commit_step([], records)
    assert log.committed("g", "t") == {1: 2}


def test_rewind_returns_to_the_committed_offsets(engine):
    log = engine.open(partitions=1)
    log.create_topics(["t"])
    log.append(keyed("t", 6))
    member = log.member("g", ["t"], member_name="m")
    records = first_records(member, 6)
    member.rewind()
    assert values(member.poll(timeout=5)) == values(records)
    member.commit_step([], records[:4])
    member.rewind()
    assert values(member.poll(timeout=5)) == values(records[4:])


# --- read-process-write ---------------------------------------------------------------------------


def read_step_input(log, member_name: str) -> tuple[GroupMember, list[Record]]:
    """Four keyed records on `in` (with an empty `out` for a step's outputs), and a member of
    group g named `member_name` that has read them."""
    log.create_topics(["in", "out"])
    log.append(keyed("in", 4))
    member = log.member("g", ["in"], member_name=member_name)
    return member, first_records(member, 4)


def test_a_step_commits_its_outputs_and_its_offsets_together_or_not_at_all(engine):
    log = engine.open(partitions=2)
    member, records = read_step_input(log, "m")

    with pytest.raises(UnknownTopic):
        member.commit_step([OutRecord("out", b"k", b"o"), OutRecord("missing", b"k", b"o")], records)
    assert log.end_offsets("out") == {0: 0, 1: 0}
    assert log.committed("g", "in") == {}

    member.rewind()
    again = first_records(member, 4)
    member.commit_step([OutRecord("out", r.key, b"out-" + r.value) for r in again], again)
    assert sorted(values(drain(log.reader(["out"])))) == sorted(b"out-" + v for v in values(records))
    assert log.committed("g", "in") == {p: max(r.offset for r in again if r.partition == p) + 1
                                        for p in {r.partition for r in again}}


def test_a_member_replaced_by_a_newer_incarnation_is_dead_and_writes_nothing(engine):
    log = engine.open(partitions=2)
    old, records = read_step_input(log, "worker-1")

    restarted = engine.open(partitions=2).member("g", ["in"], member_name="worker-1")
    early = restarted.poll(timeout=0.5)
    # MemberDead, not a plain Fenced: rewinding and polling this member again can never help
    with pytest.raises(MemberDead):
        old.commit_step([OutRecord("out", r.key, b"zombie") for r in records], records)
    # and every later step too (Kafka: the member's producers take turns, and each was fenced)
    old.rewind()
    with pytest.raises(MemberDead):
        old.commit_step([OutRecord("out", r.key, b"zombie again") for r in records], records)
    old.close()

    assert drain(log.reader(["out"])) == []
    assert log.committed("g", "in") == {}
    late = first_records(restarted, 4 - len(early))
    assert sorted(values(early + late)) == sorted(values(records))


@pytest.mark.parametrize("outputs", [True, False], ids=["with-outputs", "offsets-only"])
def test_a_member_silent_past_its_session_is_fenced_once_its_partitions_moved(engine, outputs):
    log = engine.open(partitions=2, session_timeout_s=engine.short_session_s)
    zombie, records = read_step_input(log, "slow")

    other_log = engine.open(partitions=2, session_timeout_s=engine.short_session_s)
    other = other_log.member("g", ["in"], member_name="fast")
    (taken,) = poll_until([other], lambda: len(other.assignment()) == 2, limit_s=engine.short_session_s + 15)
    with pytest.raises(Fenced) as fenced:
        # a step that wrote nothing commits its offsets without a transaction on Kafka: the group
        # generation refuses it all the same
        zombie.commit_step([OutRecord("out", r.key, b"zombie") for r in records] if outputs else [], records)
    # its partitions moved, but the member itself lives: no need to replace it
    assert not isinstance(fenced.value, MemberDead)

    assert drain(log.reader(["out"])) == []
    assert log.committed("g", "in") == {}
    taken += first_records(other, 4 - len(taken))
    assert sorted(values(taken)) == sorted(values(records))

    # Rewound and polled again, the same member joins the group again and commits: once `other`
    # leaves, every partition comes back to it, from the offsets nobody committed. (On Kafka the
    # first records may come before the member has rejoined, and that step is Fenced again.)
    other.close()
    deadline = time.monotonic() + engine.short_session_s + 30
    while True:
        zombie.rewind()
        again: list[Record] = []
        while len(again) < 4:
            assert time.monotonic() < deadline, f"the fenced member read {len(again)} of 4 records again"
            again += zombie.poll(timeout=0.2)
        try:
            zombie.commit_step([OutRecord("out", r.key, b"after-" + r.value) for r in again], again)
            break
        except MemberDead:
            raise
        except Fenced:
            continue
    assert sorted(values(drain(log.reader(["out"])))) == sorted(b"after-" + v for v in values(records))


# --- operation ------------------------------------------------------------------------------------


def test_an_idle_poll_waits_for_its_timeout_without_spinning(engine):
    log = engine.open(partitions=2)
    log.create_topics(["t"])
    member = log.member("g", ["t"], member_name="m")
    poll_until([member], lambda: len(member.assignment()) == 2)
    reader = log.reader(["t"], start=END)
    for source in (member, reader):
        started, cpu = time.monotonic(), time.thread_time()
        assert source.poll(timeout=0.6) == []
        waited, used = time.monotonic() - started, time.thread_time() - cpu
        assert 0.55 <= waited < 2.0
        assert used < 0.15, f"an idle poll of {waited:.2f} s used {used:.2f} s of CPU"


def test_a_log_that_cannot_be_opened_raises_log_unavailable_naming_it(engine, tmp_path):
    if engine.name == "sqlite":
        where = str(tmp_path / "no-such-dir" / "log.db")
        config = LogConfig(url=f"sqlite://{where}")
    else:
        where = "127.0.0.1:1"
        config = LogConfig(url=f"kafka://{where}", connect_timeout_s=1.0)
    with pytest.raises(LogUnavailable) as raised:
        open_log(config)
    message = str(raised.value)
    assert where in message or where.split("/")[-2] in message
    assert "\n" not in message and "Traceback" not in message
