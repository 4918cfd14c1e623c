"""Memory each service's state holds per live instance, over waves of creates and deletes (issue 15
item 7).

Every service that keeps state (the authenticator, scheduler, resolver, billing, one host's
spawner) and the API's read model fold the events they would read from the log: waves of
instances booted (requested → spawned, tests/factories.py) and then all deleted (delete requested,
dispatched, deleted). Python's own allocator tracer (tracemalloc) counts what the state holds:
- `per_live_b`: bytes per live instance at the peak of each wave (the target: ≤ 2 KB);
- `kept_b`: bytes still held per instance ever deleted, after the last wave (what a long-lived
  process leaks per server it has ever run: ~0 when memory is flat across waves). After each
  wave's deletions the state settles, as the runner (and the read model's tail) lets it once
  caught up with the log: the services forget an instance an hour (log time) after it went, the
  read model a deleted server a day after (its retention). The waves come a day apart, each
  spread over its day, so what stays is what the last hour's (a day's) deletions hold.
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
from eventsvm.events.codec import decode, encode
from eventsvm.events.model import Event, EventType, event_digest
from eventsvm.projections.readmodel import Models, fold
from eventsvm.projections.usage import UsageBook
from tests.factories import deletion_chain, instance_chain

WAVES = 10
PER_WAVE = 10_000
HOST = "compute-1"
DAY_MS = 86_400_000

Fold = Callable[[Event], None]
Settle = Callable[[], None]


def _folders() -> dict[str, tuple[Any, Fold, Settle]]:
    """Per state: the state object (kept alive while measured), how one event is folded in, and
    what the runner does once every state topic is folded to its end (Service.settle)."""
    out: dict[str, tuple[Any, Fold, Settle]] = {}
    for name, entry in SERVICES.items():
        service = entry.service(HOST)
        holder = [service.initial_state()]
        topics = {str(t) for t in service.state_topics}

        def evolve(event: Event, service: Any = service, holder: list[Any] = holder,
                   topics: set[str] = topics) -> None:
            if str(event.topic) in topics:
                holder[0] = service.evolve(holder[0], event)

        def settle(service: Any = service, holder: list[Any] = holder) -> None:
            if service.settle is not None:
                holder[0] = service.settle(holder[0])

        out[name] = (holder, evolve, settle)
    models = Models(usage=UsageBook())

    def fold_models(event: Event) -> None:
        # the read model keeps the stored digest of each server's newest event (deletes chain to it)
        fold(models, event, event_digest(encode(event)), str(event.topic))
        # and the usage book, which each create asks (ReadModel._fold marks what it folds)
        assert models.usage is not None
        models.usage.changed.add(event.aggregate_id)
        if event.type == EventType.INSTANCE_REQUESTED and event.project_id is not None:
            models.usage.usage(models, event.project_id)

    out["api.readmodel"] = (models, fold_models, models.settle)
    return out


def _as_read(events: list[Event]) -> list[Event]:
    """The events as a reader of the log gets them: decoded from their bytes, each with strings of
    its own (built in memory, the events of one instance would share their ids and names)."""
    return [decode(encode(event)) for event in events]


def _boots(rng: random.Random, count: int) -> list[list[Event]]:
    """`count` instances' boot events (five each), all placed on HOST, as read from the log."""
    chains = []
    for i in range(count):
        chain = instance_chain(rng, flavor_index=i % 4)
        for event in chain[2:]:
            event.body["host"] = HOST
        chains.append(_as_read(chain))
    return chains


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def _measure(fold_one: Fold, settle: Settle, waves: int, per_wave: int) -> tuple[float, float]:
    """(bytes per live instance at the worst wave's peak, bytes kept per deleted instance)."""
    rng = random.Random(15)
    worst = 0.0
    tracemalloc.start()
    try:
        start = _traced()
        for wave in range(waves):
            before = _traced()
            chains = _boots(rng, per_wave)
            # a wave a day: the factories spread one wave's events over one day of log time (the
            # deletions follow their spawned event)
            for chain in chains:
                for event in chain:
                    event.occurred_at += wave * DAY_MS
            with_boots = _traced()
            # the deletions wait in memory for their turn: what they take is not the state's (read
            # from the log too, their ids and names are strings of their own)
            deletes = [event for chain in chains for event in _as_read(deletion_chain(chain[-1], rng))]
            deletes_size = _traced() - with_boots
            for chain in chains:
                for event in chain:
                    fold_one(event)
            del chains  # the state keeps what it needs of them, and that is what is measured
            worst = max(worst, (_traced() - before - deletes_size) / per_wave)
            for event in deletes:
                fold_one(event)
            del deletes
            # caught up with the log: the runner lets the state forget what no input can need
            settle()
        end = _traced()
    finally:
        tracemalloc.stop()
    return worst, (end - start) / (waves * per_wave)


@benchmark("state_memory", unit="bytes")
def state_memory(ctx: Context) -> dict[str, list[float]]:
    """Each service's state and the read model: bytes per live instance, and kept per deleted one."""
    out: dict[str, list[float]] = {}
    per_wave = ctx.size(PER_WAVE)
    # The codec is built on first use (its schemas parsed, its readers compiled), once per process
    # and not per instance: built here, it is not counted as the first state measured holding it.
    _boots(random.Random(0), 1)
    for name, (_, fold_one, settle) in _folders().items():
        live, kept = _measure(fold_one, settle, WAVES, per_wave)
        out[f"{name}.per_live_b"] = [live]
        out[f"{name}.kept_b"] = [kept]
    return out

