"""Property tests of the deciders (issue 14 item 11): random interleavings of valid events never
produce a double claim, a second IP, a second domain or negative usage.

A small cloud runs as the runner runs it, but with hypothesis choosing every step: two scheduler
and two resolver processes (each deciding the instances of its own input partition and folding
every state topic at its own pace), a spawner per host on libvirt's test driver, and billing.
Hypothesis interleaves the topics each process reads, lets the user delete servers and stop,
start or reboot them at any moment (deletes racing builds and actions), duplicates events in the
log (a record delivered twice) and crashes a step after its side effects but before its commit
(a redelivery: the outputs are lost, the state is rebuilt, the hypervisor keeps what it did).
After every step the invariants are checked against the processes' states, the log and each
host's libvirt connection; at the end every server has settled.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from test_deciders import SEED, folded, host_registered, requested

from consumers import authenticator, billing, resolver, scheduler, spawner
from eventsvm.app.cluster import simulated_host
from eventsvm.events.model import TOPIC_OF, Event, EventType, Topic, new_event
from eventsvm.log.port import partition_for
from eventsvm.runtime.service import Service, StepContext
from eventsvm.state.usage import UsageLedger, fold_instance_event
from eventsvm.virt.compute_host import ComputeHost, HostCapacity

PARTITIONS = 2  # of the scheduler's and the resolver's input topics
# two m1.tiny (1 vCPU, 512 MB, 1 GB) fit a host: three servers on two hosts contend for room
CAPACITY = HostCapacity(vcpus=2, ram_mb=1024, disk_gb=10)
HOSTS = ("compute-0", "compute-1")
MAX_DUPLICATES = 3
MAX_CRASHES = 3
RANDOM_STEPS = 120
DRAIN_STEPS = 2000
# One case is a few hundred steps on libvirt's test driver (~0.05 s): 250 cases stay under ~20 s on
# a shared 2-core machine. No "explain" phase: on a failure the shrunk case and its steps are what
# a reader needs, and explaining a case this long would take minutes.
PROPERTY_SETTINGS = settings(
    max_examples=250, deadline=timedelta(seconds=4),
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclass
class Record:
    """One event in the log, and the partition a host-routed event was sent to."""

    event: Event
    route: int | None = None


@dataclass
class Process:
    """One service process: its state, its place in each topic, and what it decides."""

    name: str
    service: Service[Any]
    state: Any
    delivered: Callable[[Record], bool]  # the input records of the partitions it owns
    partition: int = 0
    deps: Any = None
    input_at: dict[Topic, int] = field(default_factory=dict)
    state_at: dict[Topic, int] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)  # own outputs, folded when decided


class Cloud:
    """The log and the processes reading it."""

    def __init__(self, hosts: dict[str, ComputeHost]) -> None:
        self.log: dict[Topic, list[Record]] = {}
        self.hosts = hosts
        registered = [host_registered(name, host.slot, ram_mb=CAPACITY.ram_mb, vcpus=CAPACITY.vcpus)
                      for name, host in hosts.items()]
        for event in registered:
            event.body["disk_gb"] = CAPACITY.disk_gb
        start = [*SEED, *registered]
        self.processes: list[Process] = []
        for index in range(PARTITIONS):
            self._add(f"scheduler-{index}", scheduler.SERVICE, start, self._keyed(index), index)
            self._add(f"resolver-{index}", resolver.SERVICE, start, self._keyed(index), index)
        for name, host in hosts.items():
            self._add(f"spawner-{name}", spawner.service_for(name), start,
                      lambda r, slot=host.slot: r.route == slot, deps=host)
        self._add("billing", billing.SERVICE, start, lambda r: True)

    def _add(self, name: str, service: Service[Any], start: list[Event], delivered: Callable[[Record], bool],
             partition: int = 0, deps: Any = None) -> None:
        state = folded(service, [e for e in start if e.topic in service.state_topics])
        self.processes.append(Process(name, service, state, delivered, partition, deps))

    @staticmethod
    def _keyed(partition: int) -> Callable[[Record], bool]:
        return lambda r: partition_for(r.event.aggregate_id.encode(), PARTITIONS) == partition

    def append(self, record: Record) -> None:
        self.log.setdefault(record.event.topic, []).append(record)

    def records(self, topic: Topic) -> list[Record]:
        return self.log.get(topic, [])

    def events(self, kind: EventType) -> list[Event]:
        return [r.event for r in self.records(TOPIC_OF[kind]) if r.event.type == kind]

    # -- the runner's two moves ---------------------------------------------------------------------
    def next_input(self, process: Process, topic: Topic) -> Record | None:
        records = self.records(topic)
        at = process.input_at.get(topic, 0)
        while at < len(records) and not process.delivered(records[at]):
            at += 1
        process.input_at[topic] = at
        return records[at] if at < len(records) else None

    def decide(self, process: Process, topic: Topic, crash: bool = False) -> None:
        """Decide the next input; append and fold the outputs, or (crash) lose them and rebuild."""
        record = self.next_input(process, topic)
        assert record is not None
        before = copy.deepcopy(process.state)
        ctx = StepContext(str(topic), process.partition, PARTITIONS, process.deps)
        outputs = list(process.service.decide(process.state, record.event, ctx))
        if crash:
            process.state = before  # rebuilt from the log, which never saw the outputs
            return
        for output in outputs:
            process.state = process.service.evolve(process.state, output.event)
            process.pending.add(output.event.event_id)
            self.append(Record(output.event, output.route))
        process.input_at[topic] += 1

    def fold(self, process: Process, topic: Topic) -> None:
        """Fold the next record of a state topic (an own output only once, as the runner does)."""
        at = process.state_at.get(topic, 0)
        event = self.records(topic)[at].event
        process.state_at[topic] = at + 1
        if event.event_id in process.pending:
            process.pending.discard(event.event_id)
            return
        process.state = process.service.evolve(process.state, event)

    def moves(self) -> list[tuple[str, Process, Topic]]:
        """Every step a process could take now."""
        found = []
        for process in self.processes:
            for topic in process.service.inputs:
                if self.next_input(process, topic) is not None:
                    found.append(("decide", process, topic))
            for topic in process.service.state_topics:
                if process.state_at.get(topic, 0) < len(self.records(topic)):
                    found.append(("fold", process, topic))
        return found




# -- the user (the API's part) ----------------------------------------------------------------------
def latest(cloud: Cloud, instance_id: str, kind: EventType) -> Event | None:
    """The server's last event of one kind, in log order."""
    found = [e for e in cloud.events(kind) if e.aggregate_id == instance_id]
    return found[-1] if found else None


def delete_requested(instance_id: str) -> Record:
    return Record(new_event(EventType.INSTANCE_DELETE_REQUESTED, instance_id, {"host": None}))


def action_requested(cloud: Cloud, instance_id: str, action: str) -> Record:
    """What POST /servers/{id}/action appends: routed to the host the server was spawned on."""
    spawned = latest(cloud, instance_id, EventType.INSTANCE_SPAWNED)
    assert spawned is not None
    host = spawned.body["host"]
    vm_state = "stopped" if action == "start" else "active"
    body = {"action": action, "host": host, "vm_state": vm_state, "task_state": None,
            "reboot_type": "HARD" if action == "reboot" else None}
    return Record(new_event(EventType.INSTANCE_ACTION_REQUESTED, instance_id, body),
                  route=cloud.hosts[host].slot)


# -- what must always hold ----------------------------------------------------------------------
def gone_in_log(cloud: Cloud) -> set[str]:
    return {e.aggregate_id for e in cloud.events(EventType.INSTANCE_DELETED)} | {
        e.aggregate_id for e in cloud.events(EventType.INSTANCE_FAILED) if e.body["final"]}


def assert_invariants(cloud: Cloud, servers: list[str]) -> None:
    # one domain at most per server, across every host's hypervisor
    domains = Counter(i for host in cloud.hosts.values() for i in host.hypervisor.list_instances())
    assert all(n == 1 for n in domains.values()), f"a server has a second domain: {domains}"
    # one claim at most per server, and no host beyond its capacity
    spawners = [p for p in cloud.processes if p.name.startswith("spawner-")]
    claimed = Counter(i for p in spawners for i in p.state.claims)
    assert all(n == 1 for n in claimed.values()), f"a server is claimed twice: {claimed}"
    for p in spawners:
        for host in p.state.hosts:
            used = p.state.used(host)
            assert CAPACITY.fits((0, 0, 0), used) is None, f"{host} holds {used}, beyond {CAPACITY}"
    # a server keeps the ports it was first given; no two live servers share an address
    ports: dict[str, list[Any]] = {}
    for event in cloud.events(EventType.INSTANCE_RESOURCES_RESOLVED):
        first = ports.setdefault(event.aggregate_id, event.body["ports"])
        assert event.body["ports"] == first, f"{event.aggregate_id} was given a second port"
    gone = gone_in_log(cloud)
    live = [(p["subnet_id"], p["ip_address"]) for i, held in ports.items() if i not in gone for p in held]
    assert len(live) == len(set(live)), f"an address is held twice: {Counter(live)}"
    macs = [(p["network_id"], p["mac_address"]) for i, held in ports.items() if i not in gone for p in held]
    assert len(macs) == len(set(macs)), "a MAC is held twice"
    # billing opens and closes each server's usage at most once, and never with negative time
    # (a record the log holds twice is one decision: counted by event id)
    opened, closed = (Counter(i for i, _ in {(e.aggregate_id, e.event_id) for e in cloud.events(kind)})
                      for kind in (EventType.USAGE_OPENED, EventType.USAGE_CLOSED))
    assert max(opened.values(), default=0) <= 1 and max(closed.values(), default=0) <= 1, (opened, closed)
    ledger = next(p for p in cloud.processes if p.name == "billing").state
    assert all(u.hours(0, 2**62, 2**62) >= 0 for u in ledger.usages.values())
    assert set(opened) <= set(servers)


def assert_settled(cloud: Cloud, servers: list[str], deleted: set[str]) -> None:
    """After every process caught up: each server is gone with nothing left behind, or spawned
    with exactly one domain and one claim, both on the host its last spawned event names."""
    gone = gone_in_log(cloud)
    assert deleted <= gone, f"a delete did not finish: {deleted - gone}"
    domains = {i: name for name, host in cloud.hosts.items() for i in host.hypervisor.list_instances()}
    claims = {i: p.name.removeprefix("spawner-") for p in cloud.processes if p.name.startswith("spawner-")
              for i in p.state.claims}
    for server in servers:
        if server in gone:
            assert server not in domains and server not in claims, f"{server} is gone but left behind"
            continue
        spawned = latest(cloud, server, EventType.INSTANCE_SPAWNED)
        assert spawned is not None, f"{server} neither spawned nor failed"
        assert domains.get(server) == claims.get(server) == spawned.body["host"], (server, domains, claims)
    # the ledger is what a recomputation from the instance events gives
    ledger = next(p for p in cloud.processes if p.name == "billing").state
    recomputed = UsageLedger()
    seen: set[str] = set()
    for kind in (EventType.INSTANCE_SPAWNED, EventType.INSTANCE_DELETED):
        for event in cloud.events(kind):
            if (event.aggregate_id, kind) not in seen:  # the log may hold a record twice
                seen.add((event.aggregate_id, kind))  # type: ignore[arg-type]
                fold_instance_event(recomputed, event)
    assert {k: dataclasses.astuple(u) for k, u in ledger.usages.items()} == {
        k: dataclasses.astuple(u) for k, u in recomputed.usages.items()}


# -- the run -------------------------------------------------------------------------------------
@contextmanager
def compute_hosts(broken: str | None) -> Iterator[dict[str, ComputeHost]]:
    """The hosts on libvirt's test driver, the first one failing every spawn when `broken`."""
    with tempfile.TemporaryDirectory(prefix="eventsvm-properties-") as directory:
        hosts = {}
        for slot, name in enumerate(HOSTS):
            host = simulated_host(Path(directory), name, slot, CAPACITY, broken=broken if slot == 0 else None)
            hosts[name] = dataclasses.replace(host, shutdown_timeout_s=0.1, soft_reboot_timeout_s=0.1)
        try:
            yield hosts
        finally:
            for host in hosts.values():
                host.hypervisor.close()


AUTHENTICATOR = folded(authenticator.SERVICE, SEED)
USER_ACTIONS = ("stop", "start", "reboot")


# server ids are fixed (the partition a server's inputs land in is part of what a case draws), so
# every run of a case makes the same choices
SERVER_IDS = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"eventsvm:server:{n}")) for n in range(8)]


def authenticated(server_id: str) -> Event:
    """An authenticated build of one m1.tiny, as the authenticator answers a POST /servers."""
    request = requested()
    request.aggregate_id = server_id
    [output] = authenticator.decide(AUTHENTICATOR, request, StepContext("requested", 0, 1))
    return output.event


def choices(cloud: Cloud, servers: list[str], deleted: set[str], acted: dict[str, list[str]],
            duplicates: int, crashes: int) -> list[tuple[str, Any, Any]]:
    """Every step possible now: the processes' moves first (so a failing case shrinks towards
    plain progress), then crashes, the user's deletes and actions, and duplicated records."""
    moves: list[tuple[str, Any, Any]] = list(cloud.moves())
    if crashes < MAX_CRASHES:
        moves += [("crash", p, t) for kind, p, t in cloud.moves() if kind == "decide"]
    for server in servers:
        if server in deleted:
            continue
        moves.append(("delete", server, None))
        done = acted.setdefault(server, [])
        spawned = latest(cloud, server, EventType.INSTANCE_SPAWNED) is not None
        if spawned and len(done) < len(USER_ACTIONS):
            moves.append(("action", server, USER_ACTIONS[len(done)]))
    if duplicates < MAX_DUPLICATES:
        moves += [("duplicate", record, None) for records in cloud.log.values() for record in records]
    return moves


def describe(move: tuple[str, Any, Any]) -> str:
    kind, subject, topic = move
    if isinstance(subject, Process):
        return f"{kind} {subject.name} <- {topic}"
    if isinstance(subject, Record):
        return f"{kind} {subject.event.type} of {subject.event.aggregate_id[:8]}"
    return f"{kind} {subject[:8]} {topic or ''}"


@PROPERTY_SETTINGS
@given(data=st.data(), servers=st.lists(st.sampled_from(SERVER_IDS), min_size=1, max_size=3, unique=True),
       broken=st.booleans())
def test_no_interleaving_makes_a_double_claim_a_second_ip_a_second_domain_or_negative_usage(
        data: st.DataObject, servers: list[str], broken: bool) -> None:
    with compute_hosts("simulated disk failure" if broken else None) as hosts:
        cloud = Cloud(hosts)
        for server in servers:
            cloud.append(Record(authenticated(server)))
        deleted: set[str] = set()
        acted: dict[str, list[str]] = {}
        duplicates = crashes = 0
        for _ in range(RANDOM_STEPS):
            options = choices(cloud, servers, deleted, acted, duplicates, crashes)
            if not options:
                break
            move = options[data.draw(st.integers(0, len(options) - 1), label="step")]
            note(describe(move))
            kind, subject, extra = move
            if kind in ("decide", "crash"):
                cloud.decide(subject, extra, crash=kind == "crash")
                crashes += kind == "crash"
            elif kind == "fold":
                cloud.fold(subject, extra)
            elif kind == "delete":
                cloud.append(delete_requested(subject))
                deleted.add(subject)
            elif kind == "action":
                cloud.append(action_requested(cloud, subject, extra))
                acted[subject].append(extra)
            else:
                cloud.append(Record(copy.deepcopy(subject.event), subject.route))
                duplicates += 1
            assert_invariants(cloud, servers)
        for _ in range(DRAIN_STEPS):
            moves = cloud.moves()
            if not moves:
                break
            kind, process, topic = moves[0]
            if kind == "decide":
                cloud.decide(process, topic)
            else:
                cloud.fold(process, topic)
            assert_invariants(cloud, servers)
        assert not cloud.moves(), "the processes never caught up"
        assert_settled(cloud, servers, deleted)


# -- the cases the property found, kept as plain examples -----------------------------------------
def test_an_authenticated_delivered_twice_is_placed_once() -> None:
    hosts = [host_registered("a", 0), host_registered("b", 1)]
    event = authenticated(SERVER_IDS[0])
    state = folded(scheduler.SERVICE, hosts)
    [placed] = scheduler.decide(state, event, StepContext("authenticated", 0, 1))
    state = scheduler.evolve(state, placed.event)
    # the second placement went to the other host: its delete went one way, its guest the other
    assert scheduler.decide(state, event, StepContext("authenticated", 0, 1)) == []


def test_a_failure_delivered_twice_is_rescheduled_once() -> None:
    hosts = [host_registered("a", 0), host_registered("b", 1), host_registered("c", 2)]
    state = folded(scheduler.SERVICE, hosts)
    [placed] = scheduler.decide(state, authenticated(SERVER_IDS[1]), StepContext("authenticated", 0, 1))
    state = scheduler.evolve(state, placed.event)
    failure = new_event(EventType.INSTANCE_FAILED, placed.event.aggregate_id, {
        "stage": "spawn", "reason": "disk on fire", "code": 500, "retryable": True, "final": False,
        "host": placed.event.body["host"], "attempt": 1, "details": None,
        "alternates": placed.event.body["alternates"], "spec": placed.event.body["spec"]})
    [moved] = scheduler.decide(state, failure, StepContext("failed", 0, 1))
    state = scheduler.evolve(state, moved.event)
    assert moved.event.body["attempt"] == 2
    assert scheduler.decide(state, failure, StepContext("failed", 0, 1)) == []


def test_an_attempt_already_resolved_or_answered_is_not_taken_up_again(tmp_path: Path) -> None:
    hosts = [host_registered("compute-0", 0), host_registered("compute-1", 1)]
    first = folded(scheduler.SERVICE, hosts)
    [placed] = scheduler.decide(first, authenticated(SERVER_IDS[2]), StepContext("authenticated", 0, 1))
    state = folded(resolver.SERVICE, [*SEED, *hosts])
    [resolved] = resolver.decide(state, placed.event, StepContext("scheduled", 0, 1))
    again = new_event(EventType.INSTANCE_SCHEDULED, placed.event.aggregate_id,
                      {**placed.event.body, "host": "compute-1", "attempt": 2})
    state = resolver.evolve(state, resolved.event)
    [moved] = resolver.decide(state, again, StepContext("scheduled", 0, 1))
    state = resolver.evolve(state, moved.event)
    # attempt 1 delivered again after attempt 2: routing it would send the delete to compute-0
    assert resolver.decide(state, placed.event, StepContext("scheduled", 0, 1)) == []
    assert state.routed_to[placed.event.aggregate_id] == "compute-1"
    # and the host that refused attempt 1 does not build it when that record comes again
    host = simulated_host(tmp_path, "compute-0", 0, CAPACITY, broken="disk on fire")
    try:
        service = spawner.service_for("compute-0")
        ctx = StepContext("resources-resolved", 0, 1, host)
        [refused] = service.decide(service.initial_state(), resolved.event, ctx)
        after = service.evolve(service.initial_state(), refused.event)
        host.broken = None
        assert service.decide(after, resolved.event, ctx) == []
        assert host.hypervisor.list_instances() == []
    finally:
        host.hypervisor.close()
