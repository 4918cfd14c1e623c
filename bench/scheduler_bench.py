"""Scheduling decisions per second through the scheduler service's own decide, claims included.

For 100, 1,000 and 10,000 hosts: an embedded-engine log holds the hosts' registrations (64 CPUs,
256 GB RAM, 2 TB disk each, in two availability zones); the service's runner folds them into its
state as it does at start. Each decision is then what the service does for one build: decide on
an `instance.authenticated` (flavors m1.tiny to m1.large, one in eight asking for a zone, one in
eight in an anti-affinity group), and fold the `instance.scheduled` it answers, which claims the
host. Past two instances per host the oldest is deleted as each new one lands, so the cloud
stays in a steady state of claims and releases.

Both ways of choosing run in one repetition from the same folded state: `reference` filters and
weighs every host per decision (select_destinations, SchedulerSettings(indexed_selection=False)),
`indexed` visits the host index best first (eventsvm.scheduler.ranked); `speedup` is their ratio.
The run fails if the two ever choose differently.
"""

from __future__ import annotations

import copy
import gc
import random
import time
from collections import deque
from typing import Any

from bench.suite import Context, benchmark, scratch_dir
from consumers import scheduler
from eventsvm.events.codec import Codec
from eventsvm.events.model import Event, EventType, new_event
from eventsvm.log.port import LogError
from eventsvm.runtime.runner import ServiceRunner
from eventsvm.runtime.service import StepContext
from tests.factories import FLAVORS, event_records, request_spec, sqlite_log

ZONES = ("nova", "az-2")
PER_HOST = 2
# decisions per repetition; the reference's cost grows with the hosts, so it makes fewer
INDEXED_DECISIONS = 3000
REFERENCE_SECONDS = 2.0


def registrations(count: int) -> list[Event]:
    """`count` compute hosts registering, as their spawners announce them."""
    return [
        new_event(EventType.HOST_REGISTERED, f"compute-{i:05d}", {
            "name": f"compute-{i:05d}", "slot": i, "vcpus": 64, "ram_mb": 262144, "disk_gb": 2000,
            "availability_zone": ZONES[i % 2], "enabled": True, "cpu_allocation_ratio": 4.0,
            "ram_allocation_ratio": 1.0, "disk_allocation_ratio": 1.0, "hypervisor_type": "test",
            "hypervisor_uri": "test:///default", "cpu_arch": "x86_64"})
        for i in range(count)
    ]


def builds(count: int, rng: random.Random, prefix: str) -> list[Event]:
    """`count` authenticated builds of mixed flavors, a few asking for a zone or a group apart."""
    out = []
    for n in range(count):
        spec = request_spec(f"vm-{n}", FLAVORS[rng.randrange(len(FLAVORS))])
        roll = rng.randrange(8)
        spec["availability_zone"] = ZONES[1] if roll == 0 else None
        if roll == 1:
            spec["server_group_id"] = f"group-{rng.randrange(50)}"
            spec["server_group_policy"] = "anti-affinity"
        out.append(new_event(EventType.INSTANCE_AUTHENTICATED, f"{prefix}-{n:06d}", {"spec": spec}))
    return out


def folded_state(ctx: Context, hosts: int) -> scheduler.SchedulerState:
    """The scheduler's state as its runner folds it from a log of `hosts` registrations."""
    service = scheduler.SERVICE
    with (scratch_dir(ctx, "scheduler-") as workdir,
          sqlite_log(workdir / "log.db", 4, service.state_topics) as log):
        log.append(event_records(registrations(hosts)))
        runner = ServiceRunner(log, service, Codec(), member_name="bench")
        runner.rebuild()
        runner.close()
    if len(runner.state.hosts) != hosts:
        raise LogError(f"folded {len(runner.state.hosts)} of {hosts} host registrations")
    return runner.state


def decisions(
    state: scheduler.SchedulerState, requests: list[Event], settings: scheduler.SchedulerSettings,
    live: deque[str], deadline: float = float("inf"),
) -> list[str]:
    """Decide and fold each build in turn until `deadline` (perf_counter), deleting the oldest of
    `live` once it holds PER_HOST instances a host; the hosts chosen."""
    ctx = StepContext(topic="eventsvm.instance.authenticated", partition=0, partitions=1, deps=settings)
    steady = PER_HOST * len(state.hosts)
    chosen: list[str] = []
    for request in requests:
        if time.perf_counter() > deadline:
            break
        (output,) = scheduler.decide(state, request, ctx)
        scheduler.evolve(state, output.event)
        chosen.append(output.event.body.get("host") or "")
        live.append(request.aggregate_id)
        if len(live) > steady:
            scheduler.evolve(state, new_event(EventType.INSTANCE_DELETED, live.popleft(), {}))
    return chosen


def _timed(
    warm: tuple[scheduler.SchedulerState, deque[str]], requests: list[Event],
    settings: scheduler.SchedulerSettings, seconds: float = float("inf"),
) -> tuple[float, list[str]]:
    """(decisions/s, hosts chosen) of deciding `requests` on a copy of the warm state."""
    state, live = copy.deepcopy(warm)
    gc.collect()
    started = time.perf_counter()
    chosen = decisions(state, requests, settings, live, started + seconds)
    return len(chosen) / (time.perf_counter() - started), chosen


def _run(ctx: Context, hosts: int) -> dict[str, list[float]]:
    rng = random.Random(hosts)
    warm = folded_state(ctx, hosts), deque[str]()
    # fill the cloud to its steady state first, untimed
    decisions(warm[0], builds(PER_HOST * hosts, rng, "warm"), scheduler.SchedulerSettings(), warm[1])
    count = max(100, int(INDEXED_DECISIONS * ctx.scale))
    out: dict[str, list[float]] = {"reference": [], "indexed": [], "speedup": []}
    for rep in range(ctx.repetitions):
        requests = builds(count, rng, f"rep{rep}")
        full_scan = scheduler.SchedulerSettings(indexed_selection=False)
        reference, scanned = _timed(warm, requests, full_scan, REFERENCE_SECONDS * ctx.scale)
        indexed, chosen = _timed(warm, requests, scheduler.SchedulerSettings())
        if chosen[: len(scanned)] != scanned:
            raise LogError("the indexed selection chose other hosts than the full scan")
        out["reference"].append(reference)
        out["indexed"].append(indexed)
        out["speedup"].append(indexed / reference)
    return out


def _register(hosts: int) -> None:
    def run(ctx: Context) -> Any:
        return _run(ctx, hosts)

    run.__doc__ = (f"Scheduling decisions/s with {hosts:,} hosts through the scheduler's decide and fold "
                   f"(claims and releases included): full scan vs host index, and their ratio.")
    benchmark(f"scheduler.{hosts}_hosts", unit="decisions/s; x")(run)


for _hosts in (100, 1_000, 10_000):
    _register(_hosts)
