"""One request at a time on an idle cloud (issue 15 item 2: one `POST /servers` ≤ 1 ms p50 on an
idle system), on the embedded engine, in both layouts of `eventsvm up`.

One keep-alive connection from the benchmark process (http.client: the leanest client the standard
library has). Each create waits `GAP_S` after the previous answer, long enough for the pipeline to
have built that server, so every POST meets an API and services with nothing else to do. The
latency is the client's: from sending the request to reading the whole answer, loopback included.
`GET /flavors` (a catalog read, no write) is measured the same way, for what the HTTP stack and the
token and policy checks cost without an append. The `floor` rows are the same requests to a bare
FastAPI app on the same uvicorn (bench/bare_api.py): what this machine charges for one request
after a pause before any of eventsvm runs.
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlsplit

from bench.api_bench import Cloud, _free_port, running_cloud
from bench.pipeline_bench import process_cpu_s
from bench.profile_pipeline import service_children
from bench.suite import Context, benchmark, scratch_dir

REQUESTS = 200
GAP_S = 0.25  # POST→ACTIVE takes ~100 ms on an idle cloud; each POST then finds nothing running
LAYOUTS = {"threads": (), "processes": ("--processes",)}
IDLE_WINDOW_S = 10.0  # one repetition of the idle-CPU benchmark


def _timed(conn: http.client.HTTPConnection, method: str, path: str, headers: dict[str, str],
           body: bytes | None, expected: int) -> float:
    started = time.perf_counter()
    conn.request(method, path, body=body, headers=headers)
    answer = conn.getresponse()
    answer.read()
    elapsed = (time.perf_counter() - started) * 1000
    if answer.status != expected:
        raise RuntimeError(f"{method} {path} answered {answer.status}, not {expected}")
    return elapsed


def _requests(cloud: Cloud, count: int) -> tuple[list[float], list[float]]:
    """`count` creates and `count` flavor lists, one at a time: each one's latency (ms)."""
    where = urlsplit(cloud.compute)
    conn = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=60)
    headers = {"X-Auth-Token": cloud.token, "Content-Type": "application/json"}
    body = json.dumps({"server": {**cloud.server, "name": "idle"}}).encode()
    creates, flavors = [], []
    try:
        for _ in range(count):
            creates.append(_timed(conn, "POST", f"{where.path}/servers", headers, body, 202))
            time.sleep(GAP_S)
        for _ in range(count):
            flavors.append(_timed(conn, "GET", f"{where.path}/flavors", headers, None, 200))
            time.sleep(GAP_S / 10)
    finally:
        conn.close()
    return creates, flavors


@contextmanager
def _bare_api() -> Iterator[Cloud]:
    """bench/bare_api.py on a free port, as a Cloud the same client can talk to."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.bare_api", str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            probe = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            try:
                probe.request("GET", "/v2.1/flavors")
                probe.getresponse().read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the bare API did not come up") from None
                time.sleep(0.1)
            finally:
                probe.close()
        url = f"http://127.0.0.1:{port}"
        yield Cloud(url=url, token="-", compute=f"{url}/v2.1", server={"imageRef": "-", "flavorRef": "-"})
    finally:
        server.terminate()
        server.wait(timeout=10)


def _cuts(values: Sequence[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[89], cuts[98]


@benchmark("api.idle", unit="ms")
def idle_requests(ctx: Context) -> dict[str, list[float]]:
    """One request at a time on an idle `eventsvm up` (SQLite, 8 hosts), as threads and as
    processes: POST /servers p50/p90/p99 and GET /flavors p50 (ms), the client's own clock; and
    the floor: the same requests to a bare FastAPI app on the same uvicorn."""
    out: dict[str, list[float]] = {}
    count = ctx.size(REQUESTS)
    for layout, flags in LAYOUTS.items():
        with scratch_dir(ctx, "idle-bench-") as workdir, \
                running_cloud(workdir, None, ("--hosts", "8", *flags)) as cloud:
            _requests(cloud, 20)  # warm up: the connection, caches, the first appends
            for _ in range(ctx.repetitions):
                creates, flavors = _requests(cloud, count)
                p50, p90, p99 = _cuts(creates)
                for metric, value in (("post_p50_ms", p50), ("post_p90_ms", p90), ("post_p99_ms", p99),
                                      ("flavors_p50_ms", _cuts(flavors)[0])):
                    out.setdefault(f"{layout}.{metric}", []).append(value)
    with _bare_api() as bare:
        _requests(bare, 20)
        for _ in range(ctx.repetitions):
            creates, flavors = _requests(bare, count)
            out.setdefault("floor.post_p50_ms", []).append(_cuts(creates)[0])
            out.setdefault("floor.flavors_p50_ms", []).append(_cuts(flavors)[0])
    return out


@benchmark("api.idle_cpu", unit="ms of CPU a second")
def idle_cpu(ctx: Context) -> dict[str, list[float]]:
    """What an idle `eventsvm up --processes` (SQLite, 8 hosts, 4 spawner pools) spends doing
    nothing: CPU per second of wall time of the API, of the other children together, and of the
    whole cloud, over IDLE_WINDOW_S after a few creates have settled. Each child polls the log."""
    out: dict[str, list[float]] = {}
    with scratch_dir(ctx, "idle-cpu-") as workdir, \
            running_cloud(workdir, None, ("--hosts", "8", "--processes")) as cloud:
        _requests(cloud, 5)
        time.sleep(5.0)  # the creates are built and every poll is back at its longest pause
        children = service_children(workdir)
        for _ in range(ctx.repetitions):
            before = {name: process_cpu_s(pid) for name, pid in children.items()}
            started = time.monotonic()
            time.sleep(IDLE_WINDOW_S)
            elapsed = time.monotonic() - started
            spent = {name: 1000 * (process_cpu_s(pid) - before[name]) / elapsed
                     for name, pid in children.items()}
            out.setdefault("api_ms", []).append(spent.get("api", 0.0))
            out.setdefault("services_ms", []).append(sum(v for k, v in spent.items() if k != "api"))
            out.setdefault("cloud_ms", []).append(sum(spent.values()))
    return out
