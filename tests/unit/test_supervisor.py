"""A service thread that dies is started again after a pause, and the metrics say so; a runner
whose log is out of reach waits and resumes instead of dying."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from eventsvm.app.cluster import register_host, simulated_host, spawner_runner
from eventsvm.config import LogConfig
from eventsvm.events.codec import Codec
from eventsvm.events.model import Topic
from eventsvm.log.factory import open_log
from eventsvm.log.port import LogUnavailable, OutRecord
from eventsvm.runtime import runner as runner_module
from eventsvm.runtime import supervisor as supervisor_module
from eventsvm.runtime.runner import ServiceRunner, outage_pause
from eventsvm.runtime.supervisor import Supervisor
from eventsvm.virt.compute_host import HostCapacity
from tests.unit.test_deciders import resolved_for


def wait_for(condition: Callable[[], bool], limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def samples(supervisor: Supervisor) -> dict[tuple[str, str], float]:
    return {(s.name, s.labels["service"]): s.value for m in supervisor.collect() for s in m.samples}


@pytest.fixture(autouse=True)
def quick_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "OUTAGE_FIRST_PAUSE_S", 0.01)
    monkeypatch.setattr(runner_module, "OUTAGE_MAX_PAUSE_S", 0.05)


def test_a_thread_that_dies_is_started_again_and_counted():
    stop = threading.Event()
    runs: list[int] = []
    steady = threading.Event()

    def flaky(stop_: threading.Event) -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("a bug nobody foresaw")
        steady.set()
        stop_.wait()

    supervisor = Supervisor(stop, check_interval_s=0.01)
    supervisor.add("scheduler", flaky)
    supervisor.start()
    assert steady.wait(10)
    wait_for(lambda: samples(supervisor)[("eventsvm_service_up", "scheduler")] == 1)
    assert samples(supervisor)[("eventsvm_service_restarts_total", "scheduler")] == 2
    stop.set()
    supervisor.join(5)
    assert len(runs) == 3
    assert samples(supervisor)[("eventsvm_service_up", "scheduler")] == 0


def test_a_thread_that_returns_early_is_restarted_but_not_once_stop_is_set():
    stop = threading.Event()
    runs: list[int] = []

    def returns(stop_: threading.Event) -> None:
        runs.append(1)

    supervisor = Supervisor(stop, check_interval_s=0.01)
    supervisor.add("billing", returns)
    supervisor.start()
    wait_for(lambda: len(runs) >= 2)
    stop.set()
    supervisor.join(5)
    count = len(runs)
    supervisor.check()
    assert len(runs) == count


def test_restart_pauses_grow_and_are_capped():
    first = [outage_pause(1) for _ in range(50)]
    late = [outage_pause(20) for _ in range(50)]
    assert all(0.005 <= p <= 0.01 for p in first)
    assert all(0.025 <= p <= 0.05 for p in late)


def test_a_thread_that_lived_long_starts_its_backoff_over(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(supervisor_module, "HEALTHY_AFTER_S", 0.0)
    stop = threading.Event()
    supervisor = Supervisor(stop, check_interval_s=0.01)
    died = threading.Event()

    def dies(stop_: threading.Event) -> None:
        died.set()
        raise RuntimeError("boom")

    service = supervisor.add("resolver", dies)
    for _ in range(3):
        wait_for(lambda: died.is_set() and not service.up)
        died.clear()
        supervisor.check()
        assert service.failures == 1
        wait_for(lambda: service.restart_at is None or time.monotonic() >= service.restart_at)
        supervisor.check()
    stop.set()
    supervisor.join(5)


def test_a_runner_waits_out_a_log_out_of_reach_and_then_decides_what_arrived(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    codec = Codec()
    log = open_log(LogConfig(url=f"sqlite://{tmp_path / 'log.db'}", partitions=1))
    host = simulated_host(tmp_path, "h0", 0, HostCapacity())
    register_host(log, codec, host, "test")
    runner: ServiceRunner[object] = spawner_runner(log, codec, host)
    runner.start()
    real_poll = type(runner._member).poll  # type: ignore[union-attr]
    outage = threading.Event()
    outage.set()
    failed = threading.Event()

    def poll(member: object, *args: object, **kwargs: object) -> object:
        if outage.is_set():
            failed.set()
            raise LogUnavailable("the SQLite log failed: database is locked")
        return real_poll(member, *args, **kwargs)

    monkeypatch.setattr(type(runner._member), "poll", poll)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    try:
        event = resolved_for(host="h0")
        log.append([OutRecord(str(Topic.RESOURCES_RESOLVED), event.aggregate_id.encode(),
                              codec.encode(event), 0)])
        assert failed.wait(10)
        wait_for(lambda: runner.outages >= 3)
        assert thread.is_alive() and runner.paused
        outage.clear()
        wait_for(lambda: host.hypervisor.list_instances() == [event.aggregate_id])
        wait_for(lambda: not runner.paused)
    finally:
        stop.set()
        thread.join(10)
        host.hypervisor.close()
        log.close()
    assert not thread.is_alive()
