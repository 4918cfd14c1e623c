"""`eventsvm up --processes`: the API and every service as supervised child processes, each the
very process `eventsvm run SERVICE` starts, so both cores work.

The parent seeds the log and registers the hosts (so each spawner keeps the slot it is given),
then starts one child per pipeline service, one spawner per host and `--api-workers` API
processes sharing the port (SO_REUSEPORT). A child that ends is started again after a growing
pause (eventsvm.runtime.supervisor, counted in eventsvm_service_restarts_total); SIGTERM or SIGINT
to the parent stops every child with SIGTERM (each commits the step in hand); and a parent that
is SIGKILLed takes its children with it: each asks the kernel for SIGTERM when its parent dies
(prctl PR_SET_PDEATHSIG, die_with_parent).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from eventsvm.app.cluster import register_hosts, simulated_host
from eventsvm.app.options import UsageError, on_sigterm, parse_capacity, wait_forever
from eventsvm.app.registry import PIPELINE
from eventsvm.app.writers import SEED, pool_codec, writer_codec
from eventsvm.config import LogConfig
from eventsvm.log.factory import open_log
from eventsvm.projections.readmodel import ReadModel
from eventsvm.runtime.host_routing import SPAWNER_TOPICS, spawner_pools
from eventsvm.runtime.supervisor import Supervisor

# set in each child's environment: the pid of the `up` that started it
PARENT_ENV = "EVENTSVM_PARENT_PID"
# `up --allocator`: the C allocator the children run on (see allocator_environment)
ALLOCATORS = ("auto", "jemalloc", "system")
_PR_SET_PDEATHSIG = 1
# how long the children have to stop on SIGTERM before they are killed
STOP_GRACE_S = 30.0


def die_with_parent() -> None:
    """In a child of `up --processes`: SIGTERM this process when its parent dies, however it dies.

    The kernel sends it when the thread that forked this process ends; the parent forks from its
    main thread and its supervisor's watcher, both of which live as long as the parent."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != int(parent):  # the parent died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def _log_flags(data_dir: Path, config: LogConfig) -> list[str]:
    return ["--data-dir", str(data_dir), "--log", config.url, "--namespace", config.namespace,
            "--partitions", str(config.partitions)]


def child_commands(args: argparse.Namespace, data_dir: Path, config: LogConfig,
                   pools: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each child's name and `eventsvm run` arguments, from `up`'s own; a spawner child serves a
    pool of hosts (`spawner_pools`), its broken hosts apart from the others (`--broken` marks
    every host of a child)."""
    common = _log_flags(data_dir, config)
    power = ["--shutdown-timeout", str(args.shutdown_timeout),
             "--soft-reboot-timeout", str(args.soft_reboot_timeout),
             "--forget-departed-after-minutes", str(args.forget_departed_after_minutes)]
    if args.allow_resize_to_same_host:
        power.append("--allow-resize-to-same-host")
    # a stable member name per child: a restarted child fences its dead self at once instead of
    # waiting out its session before its partitions move
    member = f"up-{os.getpid()}"
    commands: dict[str, list[str]] = {}
    for name in PIPELINE:
        commands[name] = ["run", name, *common, *power, "--member", f"{name}.{member}"]
    for pool, names in pools.items():
        broken = [n for n in names if n in args.break_host]
        for child, hosts in ((pool, [n for n in names if n not in broken]), (f"{pool}-broken", broken)):
            if not hosts:
                continue
            name = hosts[0] if len(hosts) == 1 else child
            command = ["run", "spawner", *(f"--host={h}" for h in hosts), *common, *power,
                       "--member", f"{name}.{member}"]
            if args.host_capacity:
                command += ["--host-capacity", args.host_capacity]
            if hosts is broken:
                command += ["--broken", "host marked broken by --break-host"]
            commands[name] = command
    api = ["run", "api", *common, *power, "--port", str(args.port), "--bind", args.bind,
           "--build-backlog-per-project", str(args.build_backlog_per_project),
           "--build-backlog", str(args.build_backlog),
           "--deleted-retention-hours", str(args.deleted_retention_hours),
           "--image-size-cap", str(args.image_size_cap),
           "--supervisor-state", str(state_file(data_dir))]
    if not args.enable_instance_password:
        api.append("--no-instance-password")
    if args.api_workers > 1:
        api.append("--shared-port")
    for worker in range(args.api_workers):
        commands[f"api-{worker}" if args.api_workers > 1 else "api"] = api
    return commands


def state_file(data_dir: Path) -> Path:
    """Where the parent writes its children's state for the API's /metrics."""
    return data_dir / "supervisor.json"


def allocator_environment(choice: str, environ: Mapping[str, str]) -> dict[str, str]:
    """What to add to a child's environment (`environ`: the parent's) to run it on `choice`'s C
    allocator: jemalloc through LD_PRELOAD, or nothing for glibc's malloc (`system`, or `auto`
    without jemalloc installed). CPython hands every object over 512 bytes to it, and with glibc's
    a long-running API's heap fragments: its resident memory creeps with the servers it has seen
    though what it holds does not (docs/decisions.md, "The API's last creep")."""
    if choice == "system":
        return {}
    library = ctypes.util.find_library("jemalloc")  # its soname, which LD_PRELOAD looks up as ld.so does
    if library is None:
        if choice == "jemalloc":
            raise UsageError("--allocator jemalloc: libjemalloc.so.2 is not installed "
                             "(Debian: apt install libjemalloc2)")
        return {}
    preloaded = environ.get("LD_PRELOAD", "")
    if "jemalloc" in preloaded:
        return {}
    return {"LD_PRELOAD": f"{library}:{preloaded}" if preloaded else library}


def c_allocator(pid: int | str = "self") -> str:
    """The C allocator process `pid` (this one by default) runs on: jemalloc when it is mapped in."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:  # no procfs: nothing was preloaded that we could see
        return "glibc malloc"
    return "jemalloc" if "libjemalloc" in maps else "glibc malloc"


def spawner_of(argv: list[str],
               extra: Mapping[str, str] | None = None) -> Callable[[], subprocess.Popen[Any]]:
    """A function starting `eventsvm <argv>` as a child of this process, tied to its life, with
    `extra` added to this process's environment."""
    command = [sys.executable, "-m", "eventsvm.app.cli", *argv]
    environment = {**os.environ, **(extra or {}), PARENT_ENV: str(os.getpid())}

    def spawn() -> subprocess.Popen[Any]:
        # stdout to the parent's: the children print little (their start line, warnings)
        return subprocess.Popen(command, env=environment, stdin=subprocess.DEVNULL)

    return spawn


def run_children(args: argparse.Namespace, data_dir: Path, config: LogConfig,
                 seed: Callable[[ReadModel], str | None], announce: Callable[[str | None], None]) -> int:
    """`eventsvm up --processes`: seed, register the hosts, start and supervise every child until
    SIGTERM / SIGINT, then stop them all. `seed(readmodel)` seeds the log and returns a notice for
    the console, `announce(notice)` says the cloud is up."""
    allocator = allocator_environment(args.allocator, os.environ)  # refused before anything starts
    log_ = open_log(config)
    readmodel = ReadModel(log_, writer_codec(data_dir, SEED))
    try:
        readmodel.start(tail=False)
        notice = seed(readmodel)
        capacity = parse_capacity(args.host_capacity)
        hosts = [simulated_host(data_dir, f"compute-{n + 1}", n, capacity) for n in range(args.hosts)]
        signing = pool_codec(data_dir, [h.name for h in hosts])  # one read of the key directory
        register_hosts(log_, [(h, signing) for h in hosts], "test")
        # the pools are the hosts sharing partitions, as the spawners will read them
        log_.create_topics([str(t) for t in SPAWNER_TOPICS])
        partitions = {str(t): log_.partitions(str(t)) for t in SPAWNER_TOPICS}
    finally:
        readmodel.close()
        log_.close()
    for host in hosts:
        host.hypervisor.close()
    stop = threading.Event()
    on_sigterm(stop.set)
    supervisor = Supervisor(stop, state_file=state_file(data_dir))
    try:
        pools = spawner_pools({h.name: h.slot for h in hosts}, partitions.__getitem__)
        for name, argv in child_commands(args, data_dir, config, pools).items():
            supervisor.add_process(name, spawner_of(argv, allocator))
        supervisor.start()
        announce(notice)
        on_jemalloc = "jemalloc" in {**os.environ, **allocator}.get("LD_PRELOAD", "")
        print(f"children: {' '.join(f'{n}={p}' for n, p in supervisor.pids().items())} "
              f"(C allocator: {'jemalloc' if on_jemalloc else 'glibc malloc'})", flush=True)
        wait_forever(stop)
    finally:
        stop.set()
        supervisor.join(STOP_GRACE_S)
    return 0
