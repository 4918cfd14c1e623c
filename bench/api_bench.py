"""POST /servers throughput of a whole running cloud (`eventsvm up`), on each log engine.

Each engine gets one `eventsvm up` subprocess on a free port (SQLite in a scratch directory, Kafka
in a throwaway namespace); the demo project's quota is lifted so no request is refused for it, then
every repetition fires a fixed number of POST /servers from many client threads at once, as a
busy API sees them. Every accepted request appended one `instance.requested` event durably before
its 202, so this measures how many appends per second the API achieves under concurrency.
"""

from __future__ import annotations

import os
import secrets
import socket
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.logs import _delete_topics
from bench.suite import Context, Skip, benchmark, scratch_dir
from eventsvm.config import LogConfig
from eventsvm.log.factory import open_log
from eventsvm.log.port import LogError
from tests.processes import stop

EVENTSVM = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "eventsvm"
CLIENTS = 16
REQUESTS = 2000
START_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 60.0
# a throughput measurement: no create may be refused for the backlog of unfinished builds
UNBOUNDED_BACKLOG = ("--build-backlog-per-project", "-1", "--build-backlog", "-1")


@dataclass
class Cloud:
    """A running cloud as the benchmark's clients see it."""

    url: str
    token: str
    compute: str
    server: dict[str, Any]
    # the `eventsvm up` process, whose memory the burst benchmark reads
    pid: int = 0
    # service type → public endpoint, from the demo token's catalog
    endpoints: dict[str, str] = field(default_factory=dict)
    # where the cloud's log is, for benchmarks that read its events
    log_config: LogConfig = field(default_factory=lambda: LogConfig(url=""))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _token(url: str, user: str, password: str) -> tuple[str, dict[str, Any]]:
    """A project-scoped token for `user` in the project of the same name, and the token body."""
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": user, "domain": {"name": "Default"}}}}}
    answer = httpx.post(f"{url}/identity/v3/auth/tokens", json=body, timeout=REQUEST_TIMEOUT_S)
    answer.raise_for_status()
    return answer.headers["X-Subject-Token"], answer.json()["token"]


def _endpoint(token: dict[str, Any], kind: str) -> str:
    service = next(s for s in token["catalog"] if s["type"] == kind)
    return str(next(e["url"] for e in service["endpoints"] if e["interface"] == "public")).rstrip("/")


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/identity/v3", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _prepare(url: str, admin_password: str, demo_password: str) -> Cloud:
    """Lift the demo quota with the admin's token; look up the ids a POST /servers names."""
    admin, admin_body = _token(url, "admin", admin_password)
    demo, demo_body = _token(url, "demo", demo_password)
    compute = _endpoint(admin_body, "compute")
    unlimited = {"quota_set": {"instances": -1, "cores": -1, "ram": -1}}
    httpx.put(f"{compute}/os-quota-sets/{demo_body['project']['id']}", json=unlimited,
              headers={"X-Auth-Token": admin}, timeout=REQUEST_TIMEOUT_S).raise_for_status()
    headers = {"X-Auth-Token": demo}
    flavors = httpx.get(f"{compute}/flavors", headers=headers, timeout=REQUEST_TIMEOUT_S).json()["flavors"]
    images = httpx.get(f"{_endpoint(demo_body, 'image')}/v2/images?name=cirros", headers=headers,
                       timeout=REQUEST_TIMEOUT_S).json()["images"]
    networks = httpx.get(f"{_endpoint(demo_body, 'network')}/v2.0/networks?name=private", headers=headers,
                         timeout=REQUEST_TIMEOUT_S).json()["networks"]
    server = {"flavorRef": next(f["id"] for f in flavors if f["name"] == "m1.tiny"),
              "imageRef": images[0]["id"], "networks": [{"uuid": networks[0]["id"]}]}
    endpoints = {service["type"]: _endpoint(demo_body, service["type"]) for service in demo_body["catalog"]}
    return Cloud(url, demo, compute, server, endpoints=endpoints)


@contextmanager
def running_cloud(workdir: Path, kafka: str | None,
                  options: Sequence[str] = UNBOUNDED_BACKLOG) -> Iterator[Cloud]:
    """`eventsvm up` on a free port with fresh passwords and `options`; on Kafka in its own
    namespace, whose topics are deleted afterwards."""
    port = _free_port()
    namespace = f"apibench{uuid.uuid4().hex[:8]}."
    command = [str(EVENTSVM), "up", "--data-dir", str(workdir), "--port", str(port), *options]
    if kafka is not None:
        command += ["--kafka", kafka, "--namespace", namespace]
    admin_password, demo_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    env = {**os.environ, "EVENTSVM_ADMIN_PASSWORD": admin_password, "EVENTSVM_DEMO_PASSWORD": demo_password}
    url = f"http://127.0.0.1:{port}"
    output = workdir / "up.log"
    with output.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(output.read_text(errors="replace").splitlines()[-20:])
                raise RuntimeError(f"eventsvm up did not come up (exit {process.poll()}):\n{tail}")
            time.sleep(0.3)
        cloud = _prepare(url, admin_password, demo_password)
        cloud.pid = process.pid
        cloud.log_config = (LogConfig(url=f"kafka://{kafka}", namespace=namespace) if kafka is not None
                            else LogConfig(url=f"sqlite://{(workdir / 'log.db').resolve()}"))
        yield cloud
    finally:
        stop(process)
        if kafka is not None:
            _delete_topics(kafka, _namespace_topics(kafka, namespace))


def _namespace_topics(bootstrap: str, namespace: str) -> list[str]:
    from confluent_kafka.admin import AdminClient

    names = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    return [n for n in names if n.startswith(namespace)]


def _fire(cloud: Cloud, count: int, clients: int) -> tuple[float, list[float]]:
    """POST /servers `count` times from `clients` threads; accepted per second and the latency
    (ms) of each accepted request."""
    latencies: list[float] = []
    refused: list[int] = []
    guard = threading.Lock()
    counter = iter(range(count))

    def client() -> None:
        with httpx.Client(headers={"X-Auth-Token": cloud.token}, timeout=REQUEST_TIMEOUT_S) as http:
            while True:
                with guard:
                    n = next(counter, None)
                if n is None:
                    return
                body = {"server": {**cloud.server, "name": f"bench-{n}"}}
                started = time.perf_counter()
                answer = http.post(f"{cloud.compute}/servers", json=body)
                elapsed = (time.perf_counter() - started) * 1000
                with guard:
                    if answer.status_code == 202:
                        latencies.append(elapsed)
                    else:
                        refused.append(answer.status_code)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for done in [pool.submit(client) for _ in range(clients)]:
            done.result()
    wall = time.perf_counter() - started
    if refused:
        raise RuntimeError(f"{len(refused)} of {count} POST /servers were refused: {sorted(set(refused))}")
    return len(latencies) / wall, latencies


def _run(ctx: Context, kafka: str | None) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"accepted": [], "p50_ms": [], "p95_ms": []}
    count = min(REQUESTS, ctx.size(REQUESTS))
    with scratch_dir(ctx, "api-bench-") as workdir, running_cloud(workdir, kafka) as cloud:
        _fire(cloud, min(100, count), CLIENTS)  # warm up: connections, the threadpool, the producer
        for _ in range(ctx.repetitions):
            per_s, latencies = _fire(cloud, count, CLIENTS)
            cuts = statistics.quantiles(latencies, n=20, method="inclusive")
            out["accepted"].append(per_s)
            out["p50_ms"].append(statistics.median(latencies))
            out["p95_ms"].append(cuts[18])
    return out


@benchmark("api.servers.sqlite", unit="req/s; ms")
def api_sqlite(ctx: Context) -> dict[str, list[float]]:
    """POST /servers from 16 client threads, `eventsvm up` on SQLite: accepted/s, p50 and p95 ms."""
    return _run(ctx, None)


def kafka_bootstrap(ctx: Context) -> str:
    """The run's Kafka broker, once it answers; Skip when none does."""
    try:
        open_log(LogConfig(url=f"kafka://{ctx.kafka_bootstrap}", connect_timeout_s=5.0)).close()
    except LogError as exc:
        raise Skip(f"no Kafka broker at {ctx.kafka_bootstrap}: {exc}") from None
    return ctx.kafka_bootstrap


@benchmark("api.servers.kafka", unit="req/s; ms")
def api_kafka(ctx: Context) -> dict[str, list[float]]:
    """POST /servers from 16 client threads, `eventsvm up` on Kafka: accepted/s, p50 and p95 ms."""
    return _run(ctx, kafka_bootstrap(ctx))
