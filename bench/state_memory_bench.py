"""Memory each service's state holds per live instance, over waves of creates and deletes (issue 15
item 7).

Every service that keeps state (the authenticator, scheduler, resolver, billing, one host's
spawner) and the API's read model fold the events they would read from the log: waves of
instances booted (requested → spawned, tests/factories.py) and then all deleted (delete requested,
dispatched, deleted). Python's own allocator tracer (tracemalloc) counts what the state holds:
- `per_live_b`: bytes per live instance at the peak of each wave (the target: ≤ 2 KB);
- `kept_b`: bytes still held per instance ever deleted, after the last wave (what a long-lived
  process leaks per server it has ever run: ~0 when memory is flat across waves).
Measured on the states alone: a process's resident memory adds the interpreter, libraries and the
allocator's free lists, which do not grow with the instances.
"""

from __future__ import annotations

import gc
import random
import tracemalloc
from collections.abc import Callable
from typing import Any

from bench.suite import Context, benchmark
from eventsvm.app.registry import SERVICES
from eventsvm.events.model import Event
from eventsvm.projections.readmodel import Models, fold
from tests.factories import deletion_chain, instance_chain

WAVES = 10
PER_WAVE = 10_000
HOST = "compute-1"

Fold = Callable[[Event], None]


def _folders() -> dict[str, tuple[Any, Fold]]:
    """Per state: the state object (kept alive while measured) and how one event is folded in."""
    out: dict[str, tuple[Any, Fold]] = {}
    for name, entry in SERVICES.items():
        service = entry.service(HOST)
        holder = [service.initial_state()]
        topics = {str(t) for t in service.state_topics}

        def evolve(event: Event, service: Any = service, holder: list[Any] = holder,
                   topics: set[str] = topics) -> None:
            if str(event.topic) in topics:
                holder[0] = service.evolve(holder[0], event)

        out[name] = (holder, evolve)
    models = Models()

    def fold_models(event: Event) -> None:
        fold(models, event, None, str(event.topic))

    out["api.readmodel"] = (models, fold_models)
    return out


def _boots(rng: random.Random, count: int) -> list[list[Event]]:
    """`count` instances' boot events (five each), all placed on HOST."""
    chains = []
    for i in range(count):
        chain = instance_chain(rng, flavor_index=i % 4)
        for event in chain[2:]:
            event.body["host"] = HOST
        chains.append(chain)
    return chains


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def _measure(fold_one: Fold, waves: int, per_wave: int) -> tuple[float, float]:
    """(bytes per live instance at the worst wave's peak, bytes kept per deleted instance)."""
    rng = random.Random(15)
    worst = 0.0
    tracemalloc.start()
    try:
        start = _traced()
        for _ in range(waves):
            before = _traced()
            chains = _boots(rng, per_wave)
            with_boots = _traced()
            deletes = [event for chain in chains for event in deletion_chain(chain[-1], rng)]
            # the deletions wait in memory for their turn: what they take is not the state's
            deletes_size = _traced() - with_boots
            for chain in chains:
                for event in chain:
                    fold_one(event)
            del chains  # the state keeps what it needs of them, and that is what is measured
            worst = max(worst, (_traced() - before - deletes_size) / per_wave)
            for event in deletes:
                fold_one(event)
            del deletes
        end = _traced()
    finally:
        tracemalloc.stop()
    return worst, (end - start) / (waves * per_wave)


@benchmark("state_memory", unit="bytes")
def state_memory(ctx: Context) -> dict[str, list[float]]:
    """Each service's state and the read model: bytes per live instance, and kept per deleted one."""
    out: dict[str, list[float]] = {}
    per_wave = ctx.size(PER_WAVE)
    for name, (_, fold_one) in _folders().items():
        live, kept = _measure(fold_one, WAVES, per_wave)
        out[f"{name}.per_live_b"] = [live]
        out[f"{name}.kept_b"] = [kept]
    return out

