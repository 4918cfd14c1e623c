"""Memory of `eventsvm up` under a burst of POST /servers past its backlog bound (issue 14 item 6).

One `eventsvm up` on SQLite with small bounds (50 builds per project, 100 in all); each repetition
fires 2,000 creates from 64 client threads at once, samples the process's resident memory while
they run, waits until every accepted server is ACTIVE or ERROR (nothing accepted is dropped; a
laggard fails the run) and records the peak, what was accepted and what was refused. Bounded means
the peak stays near the idle footprint and does not grow from one burst to the next beyond the
accepted servers the read model now holds.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

from bench.api_bench import REQUEST_TIMEOUT_S, Cloud, running_cloud
from bench.suite import Context, benchmark, scratch_dir
from tests.burst import burst

T = TypeVar("T")

REQUESTS = 2000
CLIENTS = 64
PER_PROJECT = 50
IN_ALL = 100
SETTLE_TIMEOUT_S = 600.0
# hosts large enough that the bound, not the capacity, decides
OPTIONS = ("--build-backlog-per-project", str(PER_PROJECT), "--build-backlog", str(IN_ALL),
           "--host-capacity", "vcpus=4096,ram=8388608,disk=65536")


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) / 1024 if found else 0.0


def _with_peak_rss(pid: int, work: Callable[[], T]) -> tuple[T, float]:
    """What `work` returns, and the most resident memory process `pid` had while it ran."""
    peak = [_rss_mb(pid)]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak.append(_rss_mb(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        return work(), max(peak)
    finally:
        done.set()
        sampler.join()


def _settled(cloud: Cloud, ids: set[str]) -> bool:
    """Every server in `ids` is ACTIVE or ERROR."""
    servers = httpx.get(f"{cloud.compute}/servers/detail?limit=1000&status=BUILD",
                        headers={"X-Auth-Token": cloud.token}, timeout=REQUEST_TIMEOUT_S).json()["servers"]
    return not ids & {s["id"] for s in servers}


@benchmark("api.burst.sqlite", unit="MB; servers")
def burst_memory(ctx: Context) -> dict[str, list[float]]:
    """2,000 creates at once, bounds 50 per project / 100 in all: RSS idle and peak (MB), 202s, 429s, 503s."""
    out: dict[str, list[float]] = {"rss_idle_mb": [], "rss_peak_mb": [], "accepted": [], "refused_429": [],
                                   "refused_503": []}
    count = min(REQUESTS, ctx.size(REQUESTS))
    with scratch_dir(ctx, "burst-bench-") as workdir, running_cloud(workdir, None, OPTIONS) as cloud:
        for rep in range(ctx.repetitions):
            idle = _rss_mb(cloud.pid)
            answers, peak = _with_peak_rss(cloud.pid, lambda rep=rep: burst(
                f"{cloud.compute}/servers", cloud.token,
                lambda n: {**cloud.server, "name": f"burst-{rep}-{n}"}, count, CLIENTS))
            statuses = [a.status for a in answers]
            if set(statuses) - {202, 429, 503}:
                raise RuntimeError(f"a burst create was answered {sorted(set(statuses))}")
            accepted = {a.server_id for a in answers if a.status == 202}
            deadline = time.monotonic() + SETTLE_TIMEOUT_S
            while not _settled(cloud, accepted):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"accepted servers still building after {SETTLE_TIMEOUT_S:g} s")
                time.sleep(1)
            out["rss_idle_mb"].append(idle)
            out["rss_peak_mb"].append(max(idle, peak))
            out["accepted"].append(len(accepted))
            out["refused_429"].append(statuses.count(429))
            out["refused_503"].append(statuses.count(503))
    return out
