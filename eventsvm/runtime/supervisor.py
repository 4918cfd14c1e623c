"""The supervisor: every service thread of a process, or every child process of `eventsvm up
--processes`, started again whenever one ends early.

A runner already waits out a log it cannot reach (eventsvm/runtime/runner.py); this is the net
under that: whatever else ends a thread or a process before `stop` is set (a bug, an error nobody
foresaw, a SIGKILL) is logged and it is started again after a growing pause, so one failure costs a
pause, never a service. The state of each is exported as Prometheus gauges and a restart counter;
a supervisor of processes also writes it to a file (`state_file`) that the API processes, which
serve /metrics, read at scrape time (StateFileCollector).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from eventsvm.runtime.runner import outage_pause

log = logging.getLogger(__name__)

# a thread that ran this long before it ended starts the backoff from its first pause again
HEALTHY_AFTER_S = 60.0


@dataclass(eq=False)
class Supervised:
    """One supervised thread or child process: what it runs, whether it is waiting for the log,
    how it has fared."""

    name: str
    target: Callable[[threading.Event], None] | None
    paused: Callable[[], bool]
    # a child process instead of a thread: how to start it
    spawn: Callable[[], subprocess.Popen[Any]] | None = None
    thread: threading.Thread | None = None
    process: subprocess.Popen[Any] | None = None
    started_at: float = 0.0
    restarts: int = 0
    failures: int = 0  # consecutive early ends
    restart_at: float | None = None  # when an ended thread is due to start again

    @property
    def up(self) -> bool:
        """True while the thread or process runs."""
        if self.process is not None:
            return self.process.poll() is None
        return self.thread is not None and self.thread.is_alive()


class Supervisor(Collector):
    """Runs each added target on its own thread until `stop` is set, restarting any that ends."""

    def __init__(self, stop: threading.Event, check_interval_s: float = 0.5,
                 state_file: Path | None = None) -> None:
        self.stop = stop
        self.check_interval_s = check_interval_s
        self.state_file = state_file
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

    def add_process(self, name: str, spawn: Callable[[], subprocess.Popen[Any]]) -> Supervised:
        """Start the child process `spawn()` starts and keep it running: `spawn` is called again,
        after a growing pause, whenever the child exits before `stop` is set."""
        service = Supervised(name, None, lambda: False, spawn)
        with self._lock:
            self.services.append(service)
            self._launch(service)
        self._write_state()
        return service

    def start(self) -> None:
        """Watch the threads from a daemon thread until `stop` is set."""
        self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self.stop.wait(self.check_interval_s):
            self.check()
            self._write_state()

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
                    how = "" if service.process is None else f" (exit status {service.process.returncode})"
                    log.error("%s stopped unexpectedly%s; starting it again in %.1f s", service.name, how,
                              pause)
                if now >= service.restart_at:
                    service.restarts += 1
                    self._launch(service)

    def _launch(self, service: Supervised) -> None:
        service.restart_at = None
        service.started_at = time.monotonic()
        if service.spawn is not None:
            try:
                service.process = service.spawn()
            except OSError:  # could not even start: an early end like any other, tried again later
                log.exception("%s could not be started", service.name)
            return
        service.thread = threading.Thread(target=self._run, args=(service,), name=service.name, daemon=True)
        service.thread.start()

    def _run(self, service: Supervised) -> None:
        assert service.target is not None
        try:
            service.target(self.stop)
        except BaseException:
            log.exception("%s died", service.name)

    def join(self, timeout: float) -> None:
        """Wait (at most `timeout` s in all) for every thread to end, and stop every child process
        (SIGTERM: each commits the step in hand; SIGKILL for one still there at the deadline);
        call after setting `stop`."""
        deadline = time.monotonic() + timeout
        if self._watcher is not None:
            self._watcher.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            threads = [s.thread for s in self.services if s.thread is not None]
            processes = [s.process for s in self.services if s.process is not None]
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("child %d did not stop within %g s; killing it", process.pid, timeout)
                process.kill()
                process.wait()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._write_state()

    def rows(self) -> list[tuple[str, bool, bool, int]]:
        """(name, up, paused, restarts) of every supervised service."""
        with self._lock:
            services = list(self.services)
        return [(s.name, s.up, s.up and s.paused(), s.restarts) for s in services]

    def pids(self) -> dict[str, int]:
        """The process id of each child process started (the latest incarnation's)."""
        with self._lock:
            return {s.name: s.process.pid for s in self.services if s.process is not None}

    def _write_state(self) -> None:
        if self.state_file is None:
            return
        with self._lock:
            services = list(self.services)
        rows = [{"service": s.name, "up": s.up, "paused": s.up and s.paused(), "restarts": s.restarts,
                 "pid": None if s.process is None else s.process.pid} for s in services]
        temporary = self.state_file.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(rows))
            os.replace(temporary, self.state_file)  # a reader sees the old file or the new, never half
        except OSError as exc:
            log.warning("could not write %s: %s", self.state_file, exc)

    def collect(self) -> Iterator[Metric]:
        """eventsvm_service_up, eventsvm_service_paused and eventsvm_service_restarts_total."""
        return service_metrics(self.rows())


def service_metrics(rows: Iterable[tuple[str, bool, bool, int]]) -> Iterator[Metric]:
    """The supervisor's metric families from (name, up, paused, restarts) rows."""
    up = GaugeMetricFamily("eventsvm_service_up", "1 while the service's thread or process runs",
                           labels=["service"])
    paused = GaugeMetricFamily("eventsvm_service_paused",
                               "1 while the service waits for the log to come back", labels=["service"])
    restarts = CounterMetricFamily("eventsvm_service_restarts",
                                   "Times the supervisor started a service's thread or process again",
                                   labels=["service"])
    for name, is_up, is_paused, count in rows:
        up.add_metric([name], 1 if is_up else 0)
        paused.add_metric([name], 1 if is_paused else 0)
        restarts.add_metric([name], count)
    yield up
    yield paused
    yield restarts


class StateFileCollector(Collector):
    """The supervisor's metrics as its process last wrote them (`eventsvm up --processes`: the
    supervisor is the parent, /metrics is served by its API children)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterator[Metric]:
        """The rows of the state file; none while it is missing or unreadable."""
        try:
            rows = json.loads(self.path.read_text())
        except (OSError, ValueError):
            rows = []
        return service_metrics((r["service"], bool(r["up"]), bool(r["paused"]), int(r["restarts"]))
                               for r in rows if isinstance(r, dict))
