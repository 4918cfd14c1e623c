"""Full garbage collections that do not walk the long-lived state every time.

The API's read model and each service's state are a large heap of objects that live for hours
(about a hundred a server). CPython's cyclic collector walks all of them in every full
collection, and under the API's traffic one came every half second or so: 65-100 ms each over
10,000 servers, collecting nothing, which was the slowest page of every `/servers/detail` walk
(docs/decisions.md, "... full collections that skip the long-lived state").

`gc.freeze()` moves every tracked object to a generation the collector does not visit; reference
counting still frees them. So after a full collection, whose survivors are the long-lived ones,
the process freezes them, and the next full collections walk only what arrived since. The price
is that a reference cycle among frozen objects that becomes garbage is not found while frozen:
every `thaw_after_s` the heap is unfrozen, so the next full collection walks it all once and
takes such cycles, and what survives is frozen again. The young generations are collected just
before a freeze, so short-lived cycles are never frozen.

A process installs the policy once (`install`); the threads that fold and step call `settle`
between batches, so a freeze never happens inside a collection (the callback only notes that one
ended) and costs the other threads no more than a young collection's pause.
Without `install` (tests, one-shot commands) `settle` does nothing.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import Any

# how long a frozen heap may hide cyclic garbage before one full collection walks all of it
THAW_AFTER_S = 600.0


class HeapFreezer:
    """Freeze what survives each full collection; thaw everything every `thaw_after_s`."""

    def __init__(self, thaw_after_s: float = THAW_AFTER_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.thaw_after_s = thaw_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._full_collection_ran = False
        self._frozen_since: float | None = None
        self.freezes = 0
        self.thaws = 0

    def on_collection(self, phase: str, info: dict[str, Any]) -> None:
        """gc's callback: note that a full collection finished (nothing else is done in it)."""
        if phase == "stop" and info.get("generation") == 2:
            self._full_collection_ran = True

    def settle(self) -> None:
        """Between batches of work: after a full collection, freeze its survivors, or once the
        heap has been frozen for `thaw_after_s`, thaw it for the next full collection to walk."""
        if not self._full_collection_ran:
            return
        with self._lock:
            if not self._full_collection_ran:
                return
            self._full_collection_ran = False
            now = self._clock()
            if self._frozen_since is not None and now - self._frozen_since >= self.thaw_after_s:
                gc.unfreeze()
                self._frozen_since = None
                self.thaws += 1
                return
            gc.collect(1)  # the young generations' garbage goes now rather than being frozen
            self._freeze(now)

    def freeze_now(self) -> None:
        """Freeze everything at once: after a bulk load that made only long-lived objects."""
        with self._lock:
            self._freeze(self._clock())

    def _freeze(self, now: float) -> None:
        gc.freeze()
        self.freezes += 1
        if self._frozen_since is None:
            self._frozen_since = now


_installed: HeapFreezer | None = None


def install(thaw_after_s: float = THAW_AFTER_S) -> HeapFreezer:
    """Use the policy in this process (once; later calls return the one installed)."""
    global _installed
    if _installed is None:
        _installed = HeapFreezer(thaw_after_s)
        gc.callbacks.append(_installed.on_collection)
    return _installed


def loaded() -> None:
    """After a bulk load with the collector off that made only long-lived objects (a read model
    rebuilt from the log): freeze them now. Everything made while the collector was off sits in
    its youngest generation, so its first passes would each walk all of it; frozen, none do."""
    if _installed is not None:
        _installed.freeze_now()


def settle() -> None:
    """`HeapFreezer.settle` of the installed policy; nothing when none is installed."""
    if _installed is not None:
        _installed.settle()
