"""GET /compute/v2.1/servers/detail over 10,000 servers, page by page (nova's `limit` / `marker`).

A data directory is seeded (`eventsvm seed`), its API runs as its own process (`eventsvm run api`),
and 10,000 boot flows (tests/factories.py: five signed events per instance, every one ACTIVE) of
the demo project are appended to its log, which the API folds as it tails it. The benchmark process
is the client: one keep-alive HTTP connection walks the whole list in pages of 1,000 with nova's
`marker`, as the demo user (their project's servers) and as the admin (`all_tenants`, the admin's
extra attributes). Each repetition is one walk; its sample is the median page's milliseconds (and
the slowest page's), so the table's min–max is the spread of whole walks. The machine is shared, so
each walk also records the API process's own CPU time a page (`cpu`, from /proc: what the page
costs the server however busy the other processes keep the cores; its idle tailing included).
"""

from __future__ import annotations

import os
import random
import secrets
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.api_bench import EVENTSVM, REQUEST_TIMEOUT_S, START_TIMEOUT_S, _endpoint, _free_port, _token
from bench.suite import Context, benchmark, scratch_dir
from eventsvm.config import log_config_from_flags
from eventsvm.log.factory import open_log
from tests.factories import pipeline_events, signed_records
from tests.processes import stop, wait_until_serving

SERVERS = 10_000
PAGE = 1000
BATCH = 2000


@dataclass(frozen=True)
class Reader:
    """Who walks the list, and how."""

    name: str
    token: str
    query: str


def _seed(data_dir: Path, env: dict[str, str]) -> None:
    subprocess.run([str(EVENTSVM), "seed", "--data-dir", str(data_dir)], env=env, check=True,
                   stdout=subprocess.DEVNULL, cwd=data_dir)


def _append_servers(data_dir: Path, project_id: str, count: int) -> None:
    """`count` ACTIVE servers of `project_id`, signed as the cloud's writers sign them."""
    events = pipeline_events(count, random.Random(15))
    for event in events:
        event.project_id = project_id
    records = signed_records(data_dir, events)
    log = open_log(log_config_from_flags(data_dir, None))
    try:
        for i in range(0, len(records), BATCH):
            log.append(records[i : i + BATCH])
    finally:
        log.close()


def walk(http: httpx.Client, url: str, token: str, query: str) -> list[float]:
    """Every page of the list at `url`, following `servers_links`; the milliseconds of each page."""
    took: list[float] = []
    seen = 0
    marker: str | None = None
    while True:
        params = f"limit={PAGE}{query}" + (f"&marker={marker}" if marker else "")
        started = time.perf_counter()
        answer = http.get(f"{url}?{params}", headers={"X-Auth-Token": token})
        took.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
        servers = answer.json()["servers"]
        seen += len(servers)
        if "servers_links" not in answer.json():
            break
        marker = servers[-1]["id"]
    if seen != SERVERS:
        raise RuntimeError(f"the walk saw {seen} servers, not {SERVERS}")
    return took


def cpu_ms(pid: int) -> float:
    """The user and system CPU milliseconds process `pid` has used, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


@contextmanager
def api_over_servers(workdir: Path, count: int) -> Iterator[tuple[str, list[Reader], int]]:
    """A seeded data dir whose API process folded `count` ACTIVE demo servers; the compute URL
    and the two readers."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    admin_password, demo_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    env = {**os.environ, "EVENTSVM_ADMIN_PASSWORD": admin_password, "EVENTSVM_DEMO_PASSWORD": demo_password}
    _seed(workdir, env)
    with (workdir / "api.log").open("w") as out:
        command = [str(EVENTSVM), "run", "api", "--data-dir", str(workdir), "--port", str(port)]
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir,
                                   start_new_session=True)
    try:
        wait_until_serving(url, process, START_TIMEOUT_S)
        admin, admin_body = _token(url, "admin", admin_password)
        demo, demo_body = _token(url, "demo", demo_password)
        compute = _endpoint(admin_body, "compute")
        _append_servers(workdir, demo_body["project"]["id"], count)
        readers = [Reader("demo", demo, ""), Reader("admin", admin, "&all_tenants=1")]
        deadline = time.monotonic() + START_TIMEOUT_S
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as http:
            while True:  # until the API has folded them all
                try:
                    walk(http, f"{compute}/servers", demo, "")
                    break
                except RuntimeError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise
                    time.sleep(1)
        yield compute, readers, process.pid
    finally:
        stop(process)


@benchmark("reads.servers_detail", unit="ms a page")
def servers_detail(ctx: Context) -> dict[str, list[float]]:
    """GET /servers/detail and /servers over 10k servers, pages of 1,000 by marker: median, slowest page.

    From another process, as the project's user and as the admin with all_tenants."""
    out: dict[str, list[float]] = {}
    with (scratch_dir(ctx, "read-bench-") as workdir,
          api_over_servers(workdir, SERVERS) as (compute, readers, pid),
          httpx.Client(timeout=REQUEST_TIMEOUT_S) as http):
        for path in ("servers/detail", "servers"):
            walk(http, f"{compute}/{path}", readers[0].token, "")  # warm up
        for _ in range(ctx.repetitions):
            for reader in readers:
                for path, name in (("servers/detail", "detail"), ("servers", "list")):
                    used = cpu_ms(pid)
                    took = walk(http, f"{compute}/{path}", reader.token, reader.query)
                    used = cpu_ms(pid) - used
                    out.setdefault(f"{name}.{reader.name}.median", []).append(statistics.median(took))
                    out.setdefault(f"{name}.{reader.name}.cpu", []).append(used / len(took))
                    out.setdefault(f"{name}.{reader.name}.slowest", []).append(max(took))
    return out
