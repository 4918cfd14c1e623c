"""The long-lived heap policy (eventsvm.runtime.heap): after a full collection its survivors are
frozen, so the next full collections do not walk them; young garbage is collected rather than
frozen; and a cycle among frozen objects that became garbage is taken once the heap thaws."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventsvm.config import LogConfig
from eventsvm.events.codec import default_codec
from eventsvm.log.factory import open_log
from eventsvm.projections.readmodel import ReadModel
from eventsvm.runtime import heap


class Node:
    """A weak-referenceable object that can sit in a reference cycle."""

    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> tuple[weakref.ref[Node], list[Node]]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a), [a, b]


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process's heap is never left frozen
    gc.collect()


def full_collection(freezer: heap.HeapFreezer) -> None:
    """A full collection, as gc runs one, with the callback an installed freezer has."""
    freezer.on_collection("start", {"generation": 2})
    gc.collect()
    freezer.on_collection("stop", {"generation": 2})


def test_the_survivors_of_a_full_collection_are_frozen_and_the_next_ones_skip_them() -> None:
    freezer = heap.HeapFreezer(thaw_after_s=600, clock=lambda: 0.0)
    state = [{"id": n, "name": f"server-{n}"} for n in range(50_000)]  # a read model's worth
    freezer.settle()
    assert gc.get_freeze_count() == 0  # nothing before a full collection ran
    full_collection(freezer)
    freezer.settle()
    assert gc.get_freeze_count() >= 50_000 and freezer.freezes == 1
    assert len(gc.get_objects(generation=2)) < 1_000  # what a full collection walks now
    state.append({"id": -1})  # still mutable, still counted and freed as ever
    assert len(state) == 50_001


def test_young_garbage_is_collected_rather_than_frozen() -> None:
    freezer = heap.HeapFreezer(thaw_after_s=600, clock=lambda: 0.0)
    full_collection(freezer)
    dead = cycle()[0]  # made after the full collection, unreachable at once
    freezer.settle()
    assert dead() is None


def test_a_frozen_cycle_that_became_garbage_is_taken_once_the_heap_thaws() -> None:
    now = [0.0]
    freezer = heap.HeapFreezer(thaw_after_s=600, clock=lambda: now[0])
    ref, held = cycle()
    full_collection(freezer)
    freezer.settle()  # frozen with the cycle reachable
    del held
    full_collection(freezer)
    freezer.settle()
    assert ref() is not None  # frozen: no full collection sees it
    now[0] = 600.0
    full_collection(freezer)
    freezer.settle()  # thawed: the next full collection walks everything
    assert freezer.thaws == 1 and gc.get_freeze_count() == 0
    full_collection(freezer)
    assert ref() is None
    freezer.settle()  # and the survivors are frozen again
    assert freezer.freezes == 3 and gc.get_freeze_count() > 0


def test_without_the_policy_installed_settle_does_nothing() -> None:
    if heap._installed is not None:
        pytest.skip("installed by another test in this process")
    gc.collect()
    heap.settle()
    assert gc.get_freeze_count() == 0


def test_a_read_model_rebuilt_from_the_log_is_frozen_at_once(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What a start folds with the collector off is long-lived: frozen as the start ends, so the
    collector's first passes do not walk all of it (it sits in the youngest generation)."""
    freezer = heap.HeapFreezer(thaw_after_s=600, clock=lambda: 0.0)
    monkeypatch.setattr(heap, "_installed", freezer)
    log = open_log(LogConfig(url=f"sqlite://{tmp_path}/log.db", partitions=2))
    readmodel = ReadModel(log, default_codec())
    readmodel.start(tail=False)
    assert freezer.freezes == 1 and gc.get_freeze_count() > 0
