"""The supervisor: every service thread of a process, started again whenever one ends early.

A runner already waits out a log it cannot reach (eventsvm/runtime/runner.py); this is the net
under that: whatever else ends a thread before `stop` is set (a bug, an error nobody foresaw) is
logged and the thread is started again after a growing pause, so one failure costs a pause, never
a service. The state of each thread is exported as Prometheus gauges and a restart counter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from eventsvm.runtime.runner import outage_pause

log = logging.getLogger(__name__)

# a thread that ran this long before it ended starts the backoff from its first pause again
HEALTHY_AFTER_S = 60.0


@dataclass(eq=False)
class Supervised:
    """One supervised thread: what it runs, whether it is waiting for the log, how it has fared."""

    name: str
    target: Callable[[threading.Event], None]
    paused: Callable[[], bool]
    thread: threading.Thread | None = None
    started_at: float = 0.0
    restarts: int = 0
    failures: int = 0  # consecutive early ends
    restart_at: float | None = None  # when an ended thread is due to start again

    @property
    def up(self) -> bool:
        """True while the thread runs."""
        return self.thread is not None and self.thread.is_alive()


class Supervisor(Collector):
    """Runs each added target on its own thread until `stop` is set, restarting any that ends."""

    def __init__(self, stop: threading.Event, check_interval_s: float = 0.5) -> None:
        self.stop = stop
        self.check_interval_s = check_interval_s
        self.services: list[Supervised] = []
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def add(self, name: str, target: Callable[[threading.Event], None],
            paused: Callable[[], bool] = lambda: False) -> Supervised:
        """Start `target(stop)` on a thread named `name` and keep it running."""
        service = Supervised(name, target, paused)
        with self._lock:
            self.services.append(service)
            self._launch(service)
        return service

    def start(self) -> None:
        """Watch the threads from a daemon thread until `stop` is set."""
        self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self.stop.wait(self.check_interval_s):
            self.check()

    def check(self) -> None:
        """Start again every thread that ended early and whose pause is over."""
        now = time.monotonic()
        with self._lock:
            for service in self.services:
                if self.stop.is_set() or service.up:
                    continue
                if service.restart_at is None:
                    lived = now - service.started_at
                    service.failures = 1 if lived >= HEALTHY_AFTER_S else service.failures + 1
                    pause = outage_pause(service.failures)
                    service.restart_at = now + pause
                    log.error("%s stopped unexpectedly; starting it again in %.1f s", service.name, pause)
                if now >= service.restart_at:
                    service.restarts += 1
                    self._launch(service)

    def _launch(self, service: Supervised) -> None:
        service.restart_at = None
        service.started_at = time.monotonic()
        service.thread = threading.Thread(target=self._run, args=(service,), name=service.name, daemon=True)
        service.thread.start()

    def _run(self, service: Supervised) -> None:
        try:
            service.target(self.stop)
        except BaseException:
            log.exception("%s died", service.name)

    def join(self, timeout: float) -> None:
        """Wait (at most `timeout` s in all) for every thread to end; call after setting `stop`."""
        deadline = time.monotonic() + timeout
        if self._watcher is not None:
            self._watcher.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            threads = [s.thread for s in self.services if s.thread is not None]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def collect(self) -> Iterator[Metric]:
        """eventsvm_service_up, eventsvm_service_paused and eventsvm_service_restarts_total."""
        up = GaugeMetricFamily("eventsvm_service_up", "1 while the service's thread runs", labels=["service"])
        paused = GaugeMetricFamily("eventsvm_service_paused",
                                   "1 while the service waits for the log to come back", labels=["service"])
        restarts = CounterMetricFamily("eventsvm_service_restarts",
                                       "Times the supervisor started a service's thread again",
                                       labels=["service"])
        with self._lock:
            services = list(self.services)
        for service in services:
            up.add_metric([service.name], 1 if service.up else 0)
            paused.add_metric([service.name], 1 if service.up and service.paused() else 0)
            restarts.add_metric([service.name], service.restarts)
        yield up
        yield paused
        yield restarts
