"""A cloud of many simulated hosts (issue 15 item 4): `eventsvm up --hosts N` for N = 100, 1,000 and
10,000 on the embedded engine, as one process.

Per N: seconds from the command to the API answering (the hosts' node files, signing keys and
registrations, one test-driver connection each, and every service's first fold), the resident
memory and threads of the process once it is up, and then a short open-loop load (the pipeline
benchmark's generator, 40 creates/s for 5 s) to show the cloud works at that size: servers ACTIVE
per second, POST→ACTIVE p50 and p99, and lost and duplicated servers (which must be 0). The hosts
whose work shares partitions are served by one spawner each (eventsvm.runtime.host_routing), so
the threads stay a handful whatever N is.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.api_bench import UNBOUNDED_BACKLOG, running_cloud
from bench.pipeline_bench import Timeline, load_point, wide_network
from bench.suite import Context, benchmark, scratch_dir
from eventsvm.log.factory import open_log

SIZES = (100, 1_000, 10_000)
RATE = 40.0
DURATION_S = 5.0


def _resident_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def _threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


@benchmark("hosts.sqlite", unit="s; MB; inst/s; ms")
def many_hosts(ctx: Context) -> dict[str, list[float]]:
    """`eventsvm up --hosts N` (N = 100, 1,000, 10,000) on SQLite: start seconds, MB, threads, and
    servers/s, p50/p99 ms, lost and duplicated at 40 creates/s (`<N>.<metric>`)."""
    out: dict[str, list[float]] = {}
    for hosts in SIZES:
        for _ in range(min(2, ctx.repetitions)):
            with scratch_dir(ctx, f"hosts-bench-{hosts}-") as workdir:
                started = time.monotonic()
                with running_cloud(workdir, None, ("--hosts", str(hosts), *UNBOUNDED_BACKLOG)) as cloud:
                    up_s = time.monotonic() - started
                    samples = {"start_s": up_s, "rss_mb": _resident_mb(cloud.pid),
                               "threads": float(_threads(cloud.pid))}
                    log_ = open_log(cloud.log_config)
                    try:
                        body = {**cloud.server, "name": "many-hosts", "networks": [wide_network(cloud)]}
                        point = load_point(cloud, Timeline(log_), body, RATE, DURATION_S)
                    finally:
                        log_.close()
                    samples["rss_after_load_mb"] = _resident_mb(cloud.pid)
                    for metric in ("throughput", "p50_ms", "p99_ms", "lost", "duplicated"):
                        samples[metric] = point[metric]
                for metric, value in samples.items():
                    out.setdefault(f"{hosts}.{metric}", []).append(value)
    return out
