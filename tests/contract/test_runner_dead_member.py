"""The runner's side of the contract, on both engines: a member that can never commit again
(MemberDead) is replaced, and the service goes on deciding new input, each input answered once.

Before, a Kafka member whose producer a newer incarnation of its name had fenced raised the plain
Fenced on every commit; the runner took that for "the partitions moved", rewound and polled the
same member again, and never committed anything again while looking alive (issue 14).
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from eventsvm.events.codec import Codec
from eventsvm.events.model import Event, EventType, Topic
from eventsvm.log.port import BEGINNING, EventLog, GroupMember
from eventsvm.runtime.runner import ServiceRunner
from tests.factories import event_records, sample_event
from tests.processes import wait_for
from tests.unit.test_fold_letters import TOY

# The replacement waits one outage pause and a rejoin (a few seconds on Kafka); the waits below add
# up to under two minutes, so a test still running after 150 s is stuck.
pytestmark = pytest.mark.timeout(150)

MEMBER = "toy-1"


def answers(log: EventLog, codec: Codec) -> Counter[str]:
    """How many times each input was answered: the toy service's outputs by their cause."""
    reader = log.reader([str(Topic.AUTHENTICATED)], BEGINNING)
    try:
        found: Counter[str] = Counter()
        while not reader.at_end() or not found:
            records = reader.poll(1000, timeout=0.2)
            found.update(str(codec.decode(r.value).causation_id) for r in records)
            if not records and reader.at_end():
                break
        return found
    finally:
        reader.close()


def requests(count: int) -> list[Event]:
    return [sample_event(EventType.INSTANCE_REQUESTED) for _ in range(count)]


def test_a_runner_whose_member_a_newer_incarnation_fenced_replaces_it_and_goes_on(engine):
    codec = Codec()
    log = engine.open(partitions=2)
    runner = ServiceRunner(log, TOY, codec, member_name=MEMBER, poll_timeout=0.05)
    runner.start()  # its topics exist and it is in the group before anything is appended
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), name="toy-runner")
    thread.start()
    fencer: GroupMember | None = None
    try:
        before = requests(3)
        log.append(event_records(before))
        wait_for(lambda: set(answers(log, codec)) >= {e.event_id for e in before}, 60,
                 "the runner answered the requests appended before the fence")
        first = runner._member
        assert first is not None

        # A newer incarnation of the same process role (the same member name) fences this one: on
        # Kafka its transactional producers take over the ids; on SQLite it takes the name's row.
        # It reads a partition by hand, so it joins no split and holds nothing of the group's.
        fencer = engine.open(partitions=2).member(runner.group, [str(Topic.REQUESTED)],
                                                  member_name=MEMBER, partitions=[(str(Topic.REQUESTED), 0)])
        after = requests(6)
        log.append(event_records(after))
        wait_for(lambda: runner._member is not None and runner._member is not first, 60,
                 "the runner replaced the member the newer incarnation fenced")
        fencer.close()
        fencer = None

        wanted = {e.event_id for e in before + after}
        wait_for(lambda: set(answers(log, codec)) >= wanted, 60,
                 "the runner answered the requests appended after the fence")
    finally:
        stop.set()
        thread.join(30)
        if fencer is not None:
            fencer.close()
    assert not thread.is_alive()
    answered = answers(log, codec)
    assert answered == Counter({event_id: 1 for event_id in wanted}), "an input answered twice or not at all"
