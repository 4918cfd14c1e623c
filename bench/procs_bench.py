"""POST→ACTIVE throughput of `eventsvm up` as threads of one process against supervised child
processes with one and two API workers (issue 15 item 3), on the embedded engine.

Each layout gets its own `eventsvm up` (8 test-driver hosts, no backlog bound, demo's quota lifted);
each repetition POSTs a batch of m1.tiny servers from 16 client threads and times from the first
POST until the API lists every one of them ACTIVE. The seeded private network is a /24, so the
batches stay small enough that every repetition of a run finds addresses.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from bench.api_bench import CLIENTS, REQUEST_TIMEOUT_S, UNBOUNDED_BACKLOG, Cloud, _fire, running_cloud
from bench.suite import Context, benchmark, scratch_dir

BATCH = 80
# addresses of the /24 the servers of all repetitions share
ADDRESSES = 240
LAYOUTS = {
    "threads": (),
    "processes.1api": ("--processes",),
    "processes.2api": ("--processes", "--api-workers", "2"),
}
HOSTS = ("--hosts", "8", "--host-capacity", "vcpus=4096,ram=4194304,disk=65536")
ACTIVE_TIMEOUT_S = 600.0


def _servers(cloud: Cloud, status: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{cloud.compute}/servers/detail", params={"status": status, "limit": 1000},
                      headers={"X-Auth-Token": cloud.token}, timeout=REQUEST_TIMEOUT_S)
    reply.raise_for_status()
    servers: list[dict[str, Any]] = reply.json()["servers"]
    return servers


def _count(cloud: Cloud, status: str) -> int:
    return len(_servers(cloud, status))


def _post_to_active(cloud: Cloud, batch: int) -> float:
    """Servers per second from the first POST of `batch` until all of them are ACTIVE (each batch
    starts once the one before is ACTIVE, so the ACTIVE count grows by exactly `batch`)."""
    before = _count(cloud, "ACTIVE")
    started = time.perf_counter()
    _fire(cloud, batch, CLIENTS)
    deadline = time.monotonic() + ACTIVE_TIMEOUT_S
    while (active := _count(cloud, "ACTIVE") - before) < batch:
        if failed := _servers(cloud, "ERROR"):
            raise RuntimeError(f"{len(failed)} servers went to ERROR: {failed[0].get('fault')}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {active} of {batch} ACTIVE after {ACTIVE_TIMEOUT_S:g} s")
        time.sleep(0.1)
    return batch / (time.perf_counter() - started)


def _layout(ctx: Context, flags: tuple[str, ...]) -> list[float]:
    batch = min(BATCH, ctx.size(BATCH))
    repetitions = max(1, min(ctx.repetitions, ADDRESSES // batch))
    out = []
    with scratch_dir(ctx, "procs-bench-") as workdir, \
            running_cloud(workdir, None, (*UNBOUNDED_BACKLOG, *HOSTS, *flags)) as cloud:
        _post_to_active(cloud, 5)  # connections, threadpools, every child's first fold
        for _ in range(repetitions):
            out.append(_post_to_active(cloud, batch))
    return out


@benchmark("up.active.embedded", unit="instances/s")
def up_active(ctx: Context) -> dict[str, list[float]]:
    """POST→ACTIVE of batches of 80 servers (16 clients, 8 hosts, SQLite): `up` as threads of one
    process, as child processes with 1 API worker, and with 2."""
    return {name: _layout(ctx, flags) for name, flags in LAYOUTS.items()}
