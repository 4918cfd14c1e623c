"""What `eventsvm up --processes` starts: the `eventsvm run` command of each child, from up's own
flags and the environment; and the supervisor's state as the API children export it."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from eventsvm.app.children import allocator_environment, child_commands, state_file
from eventsvm.app.cli import build_parser, main
from eventsvm.app.options import EXIT_CONFIG, UsageError
from eventsvm.config import LogConfig
from eventsvm.runtime.supervisor import StateFileCollector, Supervisor

CONFIG = LogConfig(url="sqlite:///tmp/d/log.db", partitions=4, namespace="")


def commands(*flags: str, pools: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    args = build_parser().parse_args(["up", *flags])
    pools = pools or {"compute-1": ["compute-1"], "compute-2": ["compute-2"]}
    return child_commands(args, Path("/tmp/d"), CONFIG, pools)


def served(argv: list[str]) -> list[str]:
    """The hosts a `run spawner` command serves, as `run` parses them."""
    return list(build_parser().parse_args(argv).host)


def test_one_child_per_service_per_host_and_per_api_worker() -> None:
    found = commands("--processes", "--api-workers", "3", "--break-host", "compute-2")
    assert sorted(found) == ["api-0", "api-1", "api-2", "authenticator", "billing", "compute-1", "compute-2",
                             "resolver", "scheduler"]
    assert all(argv[0] == "run" and "--log" in argv and CONFIG.url in argv for argv in found.values())
    assert all("--shared-port" in found[f"api-{n}"] for n in range(3))
    assert found["compute-2"][found["compute-2"].index("--broken") + 1].startswith("host marked broken")
    assert "--broken" not in found["compute-1"]
    members = [argv[argv.index("--member") + 1] for name, argv in found.items() if not name.startswith("api")]
    assert len(set(members)) == len(members)  # each child fences only its own dead self


def test_hosts_sharing_partitions_are_one_child_and_a_broken_host_a_child_apart() -> None:
    pools = {"pool-0": ["compute-1", "compute-3", "compute-5"], "pool-1": ["compute-2", "compute-4"]}
    found = commands("--processes", "--break-host", "compute-3", pools=pools)
    spawners = {name: argv for name, argv in found.items() if "spawner" in argv}
    assert {name: served(argv) for name, argv in spawners.items()} == {
        "pool-0": ["compute-1", "compute-5"], "compute-3": ["compute-3"],
        "pool-1": ["compute-2", "compute-4"]}
    assert "--broken" in spawners["compute-3"] and "--broken" not in spawners["pool-0"]
    members = [argv[argv.index("--member") + 1] for argv in spawners.values()]
    assert len(set(members)) == 3


def test_one_api_worker_binds_the_port_alone() -> None:
    found = commands("--processes")
    assert "api" in found and "--shared-port" not in found["api"]
    assert str(state_file(Path("/tmp/d"))) in found["api"]


def test_api_workers_and_processes_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTSVM_API_WORKERS", "4")
    monkeypatch.setenv("EVENTSVM_PROCESSES", "yes")
    args = build_parser().parse_args(["up"])
    assert (args.api_workers, args.processes) == (4, True)


def test_an_api_worker_count_that_is_no_number_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EVENTSVM_API_WORKERS", "many")
    assert main(["up"]) == 2
    assert "EVENTSVM_API_WORKERS must be an integer" in capsys.readouterr().err


def test_a_child_that_exits_is_started_again_and_exported_through_the_state_file(tmp_path: Path) -> None:
    stop = threading.Event()
    path = tmp_path / "supervisor.json"
    supervisor = Supervisor(stop, check_interval_s=0.01, state_file=path)
    supervisor.add_process("brief", lambda: subprocess.Popen([sys.executable, "-c", "pass"]))
    supervisor.start()
    try:
        deadline = time.monotonic() + 20
        while supervisor.rows()[0][3] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        supervisor.join(10)
    samples = {(s.name, s.labels["service"]): s.value
               for m in StateFileCollector(path).collect() for s in m.samples}
    assert samples[("eventsvm_service_restarts_total", "brief")] >= 1
    assert samples[("eventsvm_service_up", "brief")] == 0


def test_the_deleted_servers_retention_is_a_setting_each_api_worker_gets() -> None:
    from eventsvm.app.options import UsageError, deleted_retention_ms

    found = commands("--processes", "--deleted-retention-hours", "720")
    worker = build_parser().parse_args(found["api"])
    assert deleted_retention_ms(worker) == 720 * 3_600_000
    assert deleted_retention_ms(build_parser().parse_args(["up", "--deleted-retention-hours", "-1"])) is None
    assert deleted_retention_ms(build_parser().parse_args(["up"])) == 24 * 3_600_000
    with pytest.raises(UsageError):
        deleted_retention_ms(build_parser().parse_args(["up", "--deleted-retention-hours", "-2"]))


def test_the_children_run_on_jemalloc_when_it_is_there_and_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = {"jemalloc": "libjemalloc.so.2"}
    monkeypatch.setattr(ctypes.util, "find_library", installed.get)
    assert allocator_environment("auto", {}) == {"LD_PRELOAD": "libjemalloc.so.2"}
    assert allocator_environment("jemalloc", {}) == {"LD_PRELOAD": "libjemalloc.so.2"}
    # an operator's own preloads are kept, after it; one already preloading jemalloc is left alone
    assert allocator_environment("auto", {"LD_PRELOAD": "/opt/trace.so"}) == {
        "LD_PRELOAD": "libjemalloc.so.2:/opt/trace.so"}
    assert allocator_environment("auto", {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}) == {}
    assert allocator_environment("system", {}) == {}
    assert build_parser().parse_args(["up"]).allocator == "auto"
    monkeypatch.setenv("EVENTSVM_ALLOCATOR", "system")
    assert build_parser().parse_args(["up"]).allocator == "system"
    monkeypatch.setenv("EVENTSVM_ALLOCATOR", "tcmalloc")
    assert main(["up", "--processes"]) == EXIT_CONFIG  # refused, not taken for auto


def test_without_jemalloc_auto_is_glibc_and_asking_for_it_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert allocator_environment("auto", {}) == {}
    with pytest.raises(UsageError, match="libjemalloc2"):
        allocator_environment("jemalloc", {})
