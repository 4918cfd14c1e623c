"""POST→ACTIVE of a whole cloud under an open-loop load, on each engine (issue 15 items 1, 2, 9).

One `eventsvm up` per engine with 8 simulated hosts on libvirt's test driver (large enough that
capacity never refuses), the demo quota and the build backlog lifted, and a /16 network so 10,000
servers get addresses. For each offered rate the lean load generator (bench/loadgen.py, its own
process) sends POST /servers on a constant schedule for a fixed time; the benchmark then reads the
log until every accepted server has spawned or failed and measures, from the events' own
timestamps:
- throughput: servers ACTIVE per second from the first request sent to the last spawn;
- POST→ACTIVE latency (p50, p99): from the request's scheduled send time to its `instance.spawned`;
- each stage's p50 and p99 (requested→authenticated→scheduled→resources-resolved→spawned);
- what the load generator cost, in percent of one core (of the two);
- what the cloud cost: CPU milliseconds of all its processes per server made ACTIVE (the ceiling
  two cores put on any layout is 2,000 / that servers a second);
- on a broker this machine runs (scripts/kafka.sh), what the broker cost likewise: it shares the
  same two cores;
- lost (accepted, never spawned nor failed) and duplicated (spawned twice) servers, which must be 0.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.api_bench import REQUEST_TIMEOUT_S, UNBOUNDED_BACKLOG, Cloud, kafka_bootstrap, running_cloud
from bench.suite import Context, register, scratch_dir
from eventsvm.config import LogConfig, parse_log_url
from eventsvm.events.codec import Codec, CodecError
from eventsvm.events.model import INSTANCE_TOPICS, Topic
from eventsvm.log.factory import open_log
from eventsvm.log.port import BEGINNING, EventLog, Reader

ROOT = Path(__file__).resolve().parent.parent
HOSTS = 8
# offered loads (creates per second), each for DURATION_S seconds
RATES = (25, 50, 100, 200)
DURATION_S = 10.0
CONNECTIONS = 256
OPTIONS = (*UNBOUNDED_BACKLOG, "--hosts", str(HOSTS),
           "--host-capacity", "vcpus=65536,ram=134217728,disk=1048576")
STAGES = (Topic.REQUESTED, Topic.AUTHENTICATED, Topic.SCHEDULED, Topic.RESOURCES_RESOLVED, Topic.SPAWNED)


class Timeline:
    """Per instance, when each stage's event happened (its occurred_at), read off the log as the
    run goes; and how many times it spawned."""

    def __init__(self, log_: EventLog) -> None:
        names = [str(t) for t in INSTANCE_TOPICS]
        log_.create_topics(names)
        self.reader: Reader = log_.reader(names, BEGINNING)
        self.codec = Codec()
        self.at: dict[str, dict[Topic, int]] = defaultdict(dict)
        self.spawns: dict[str, int] = defaultdict(int)
        self.failed: set[str] = set()
        self.deleted: dict[str, int] = defaultdict(int)

    def catch_up(self) -> None:
        """Fold everything the log holds now."""
        while records := self.reader.poll(5000, timeout=0.05):
            for record in records:
                try:
                    event = self.codec.decode(record.value)
                except CodecError:
                    continue
                topic = event.topic
                if topic == Topic.SPAWNED:
                    self.spawns[event.aggregate_id] += 1
                elif topic == Topic.FAILED:
                    self.failed.add(event.aggregate_id)
                elif topic == Topic.DELETED:
                    self.deleted[event.aggregate_id] += 1
                if topic in STAGES:
                    self.at[event.aggregate_id].setdefault(topic, event.occurred_at)

    def wait_finished(self, ids: set[str], timeout_s: float) -> set[str]:
        """Wait until each of `ids` spawned or failed; those still unfinished at the timeout."""
        return self.wait(ids, lambda i: i in self.failed or Topic.SPAWNED in self.at.get(i, {}), timeout_s)

    def wait(self, ids: set[str], done: Callable[[str], bool], timeout_s: float) -> set[str]:
        """Wait until `done(id)` holds for each of `ids`; those for which it does not at the timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.catch_up()
            left = {i for i in ids if not done(i)}
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)


def wide_network(cloud: Cloud) -> dict[str, str]:
    """A /16 network for the run: 10,000 servers need more addresses than `private` has."""
    headers = {"X-Auth-Token": cloud.token}
    network_url = cloud.endpoints["network"]
    net = httpx.post(f"{network_url}/v2.0/networks", json={"network": {"name": "bench16"}}, headers=headers,
                     timeout=REQUEST_TIMEOUT_S)
    net.raise_for_status()
    net_id = net.json()["network"]["id"]
    httpx.post(f"{network_url}/v2.0/subnets", headers=headers, timeout=REQUEST_TIMEOUT_S, json={"subnet": {
        "network_id": net_id, "ip_version": 4, "cidr": "10.64.0.0/16", "name": "bench16"}}).raise_for_status()
    return {"uuid": net_id}


def _offer(cloud: Cloud, body: dict[str, Any], rate: float, count: int) -> tuple[list[list[Any]], float]:
    """Run the load generator in its own process; every request's record and its CPU seconds."""
    spec = {"url": cloud.compute, "token": cloud.token, "body": body, "rate": rate, "count": count,
            "connections": CONNECTIONS}
    done = subprocess.run([sys.executable, "-m", "bench.loadgen"], input=json.dumps(spec),
                          capture_output=True, text=True, cwd=ROOT, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=count / rate + 600)
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {done.stderr[-2000:]}")
    out = json.loads(done.stdout)
    return out["sent"], float(out["cpu_s"])


def cloud_processes(root: int) -> Iterator[int]:
    """`root` and every living process under it (`up --processes`' children: the API workers, the
    services, the spawners), from /proc; one that ends meanwhile is left out, its children too."""
    pending = [root]
    while pending:
        current = pending.pop()
        try:
            # each thread's own children: a supervisor thread starts (and restarts) a child
            children = [c for task in Path(f"/proc/{current}/task").iterdir()
                        for c in (task / "children").read_text().split()]
        except OSError:
            continue  # gone meanwhile
        yield current
        pending += [int(c) for c in children]


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) used so far by `pid` alone, from /proc; OSError
    when it is gone."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _cloud_cpu_s(pid: int) -> float:
    """CPU seconds used so far by `pid` and every living process under it, from /proc."""
    total = 0.0
    for current in cloud_processes(pid):
        try:
            total += process_cpu_s(current)
        except OSError:
            continue  # gone meanwhile
    return total


def local_broker_pid(log_config: LogConfig) -> int | None:
    """The pid of the broker `scripts/kafka.sh` runs on this machine for the cloud's log (one
    broker, its pid file under .kafka/<port>/), or None: SQLite, a remote or gone broker."""
    engine, where = parse_log_url(log_config.url)
    if engine != "kafka" or "," in where:
        return None
    host, _, port = where.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        return None
    try:
        pid = int((ROOT / ".kafka" / port / "broker.pid").read_text())
        process_cpu_s(pid)
    except (OSError, ValueError):
        return None
    return pid


def _quantile(values: Sequence[float], q: int) -> float:
    """The q-th percentile (inclusive method; the value itself for a single sample)."""
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def load_point(cloud: Cloud, timeline: Timeline, body: dict[str, Any], rate: float,
               duration_s: float) -> dict[str, float]:
    """One offered rate: the metrics of the module docstring."""
    count = max(20, int(rate * duration_s))
    broker = local_broker_pid(cloud.log_config)
    broker_cpu_before = process_cpu_s(broker) if broker else 0.0
    cloud_cpu_before = _cloud_cpu_s(cloud.pid)
    sent, cpu_s = _offer(cloud, body, rate, count)
    refused = [r for r in sent if r[3] != 202]
    if refused:
        raise RuntimeError(f"{len(refused)} of {count} creates were refused: {refused[:3]}")
    sent_at = {r[4]: r[1] for r in sent}
    ids = set(sent_at)
    left = timeline.wait_finished(ids, timeout_s=count / 5 + 120)
    cloud_cpu_s = _cloud_cpu_s(cloud.pid) - cloud_cpu_before
    broker_cpu_s = process_cpu_s(broker) - broker_cpu_before if broker else 0.0
    active = [i for i in ids if Topic.SPAWNED in timeline.at.get(i, {})]
    first = min(sent_at.values())
    last = max(timeline.at[i][Topic.SPAWNED] for i in active) if active else first
    e2e = [timeline.at[i][Topic.SPAWNED] - sent_at[i] for i in active]
    offered_s = count / rate
    out = {
        "offered": rate,
        "throughput": len(active) / max((last - first) / 1000, offered_s),
        "p50_ms": _quantile(e2e, 50),
        "p99_ms": _quantile(e2e, 99),
        "post_p50_ms": _quantile([r[2] for r in sent], 50),
        "post_p99_ms": _quantile([r[2] for r in sent], 99),
        "loadgen_pct_core": 100 * cpu_s / (offered_s + max(r[2] for r in sent) / 1000),
        # what the whole cloud (every process of it) spent on each server, POST to ACTIVE: two cores
        # give at most 2,000 / this servers a second, whatever the layout
        "cloud_cpu_ms_per_server": 1000 * cloud_cpu_s / max(1, len(active)),
        "failed": float(len(ids & timeline.failed)),
        "lost": float(len(left)),
        "duplicated": float(sum(1 for i in ids if timeline.spawns.get(i, 0) > 1)),
    }
    if broker:
        # the broker shares the two cores when it runs here: its CPU counts against the same
        # ceiling (2,000 / (cloud + broker) servers a second)
        out["broker_cpu_ms_per_server"] = 1000 * broker_cpu_s / max(1, len(active))
    for earlier, later in zip(STAGES, STAGES[1:], strict=False):
        gaps = [timeline.at[i][later] - timeline.at[i][earlier] for i in active
                if earlier in timeline.at[i] and later in timeline.at[i]]
        stage = str(later).rsplit(".", 1)[-1]
        out[f"stage.{stage}.p50_ms"] = _quantile(gaps, 50)
        out[f"stage.{stage}.p99_ms"] = _quantile(gaps, 99)
    if out["lost"] or out["duplicated"]:
        print(f"pipeline bench: {out['lost']:.0f} lost, {out['duplicated']:.0f} duplicated at {rate}/s",
              file=sys.stderr, flush=True)
    return out


def curve(ctx: Context, kafka: str | None, rates: tuple[float, ...] = RATES,
          options: tuple[str, ...] = OPTIONS) -> dict[str, list[float]]:
    """Every rate's metrics, `ctx.repetitions` times (at most 3: a point costs a minute or more),
    named `<rate>.<metric>`."""
    out: dict[str, list[float]] = defaultdict(list)
    duration = max(2.0, DURATION_S * ctx.scale)
    with scratch_dir(ctx, "pipeline-bench-") as workdir, running_cloud(workdir, kafka, options) as cloud:
        log_ = open_log(cloud.log_config)
        try:
            timeline = Timeline(log_)
            body = {**cloud.server, "name": "load", "networks": [wide_network(cloud)]}
            load_point(cloud, timeline, body, rates[0], 2.0)  # warm up: connections, caches, producers
            for _ in range(min(3, ctx.repetitions)):
                for rate in rates:
                    for metric, value in load_point(cloud, timeline, body, rate, duration).items():
                        if metric != "offered":
                            out[f"{rate:g}.{metric}"].append(value)
        finally:
            log_.close()
    return dict(out)


def _on_engine(engine: str, ctx: Context) -> dict[str, list[float]]:
    return curve(ctx, kafka_bootstrap(ctx) if engine == "kafka" else None)


for _engine, _label in (("sqlite", "SQLite"), ("kafka", "Kafka")):
    register(f"pipeline.{_engine}", functools.partial(_on_engine, _engine),
             f"POST→ACTIVE under an open-loop load at each offered rate, `eventsvm up` on {_label}, 8 hosts.",
             unit="inst/s; ms")
