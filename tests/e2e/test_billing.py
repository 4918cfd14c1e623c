"""Billing on both engines: what the ledger charges for servers built by the real pipeline, and that a
billing process killed at arbitrary points still writes every usage record exactly once."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from consumers import billing as billing_service
from eventsvm.app.usage_cli import add_commands
from eventsvm.config import LogConfig
from eventsvm.events.codec import Codec
from eventsvm.events.model import Event, EventType, Topic, new_event, now_ms
from eventsvm.log.factory import open_log
from eventsvm.log.port import EventLog, LogUnavailable
from eventsvm.projections.billing import (
    LedgerView,
    ledger_from_instance_events,
    ledger_from_log,
    read_log,
    tenant_usage,
)
from eventsvm.runtime.runner import ServiceRunner
from tests.e2e.conftest import Cloud, CloudFactory
from tests.factories import signed_records

ROOT = Path(__file__).resolve().parents[2]
GROUP = "eventsvm.billing"
FLAVORS = [
    {"id": "1", "name": "m1.tiny", "vcpus": 1, "ram_mb": 512, "disk_gb": 1},
    {"id": "2", "name": "m1.small", "vcpus": 1, "ram_mb": 2048, "disk_gb": 20},
    {"id": "3", "name": "m1.medium", "vcpus": 2, "ram_mb": 4096, "disk_gb": 40, "ephemeral_gb": 5},
]


def start_billing_runner(cloud: Cloud) -> tuple[threading.Event, threading.Thread]:
    """A billing member in this process, in the same group whatever else the cluster runs."""
    runner = ServiceRunner(cloud.cluster.open_log(), billing_service.SERVICE,
                           cloud.cluster.codec_of("billing"),
                           member_name=f"billing-test-{uuid.uuid4().hex[:6]}")
    runner.start()
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def run_usage_cli(cloud: Cloud, *extra: str) -> str:
    """`eventsvm usage ...` against the cloud's log, its output as text."""
    parser = argparse.ArgumentParser(prog="eventsvm")
    add_commands(parser.add_subparsers())
    config = cloud.options.log
    out = cloud.options.data_dir / f"usage-{uuid.uuid4().hex[:6]}.out"
    args = parser.parse_args(["usage", "--log", config.url, "--namespace", config.namespace,
                              "--partitions", str(config.partitions), "--output", str(out),
                              "--data-dir", str(cloud.options.data_dir), *extra])  # its writers' keys
    assert args.func(args) == 0
    return out.read_text()


def test_usage_of_pipeline_servers_matches_nova_and_the_export(make_cloud: CloudFactory) -> None:
    cloud = make_cloud(hosts=2)
    began = now_ms()
    stop, thread = start_billing_runner(cloud)
    try:
        ids = [cloud.submit(f"web-{n}", flavor="2" if n % 2 else "1") for n in range(4)]
        doomed = cloud.submit("no-such-flavor", flavor="does-not-exist")
        servers = cloud.wait_for(ids, {"ACTIVE", "ERROR"})
        assert {s.status for s in servers.values()} == {"ACTIVE"}
        assert cloud.wait_for([doomed], {"ERROR", "ACTIVE"})[doomed].status == "ERROR"
        for gone in ids[:2]:
            cloud.delete(gone)
        cloud.wait_for(ids[:2], {"DELETED"})
        view = LedgerView(cloud.cluster.open_log(), cloud.cluster.codec)
        deadline = time.monotonic() + 30
        while True:
            ledger = view.current()
            usages = ledger.usages
            ended = sum(u.ended_at is not None for u in usages.values())
            if sum(u.billable for u in usages.values()) == 4 and ended == 2:
                break
            assert time.monotonic() < deadline, f"billing ledger incomplete after 30 s: {usages}"
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=30)

    user_id, project_id = cloud.demo
    end = now_ms()
    models = cloud.readmodel.models

    def info(instance_id: str) -> tuple[str, str | None]:
        inst = models.instances.get(instance_id)
        return (inst.name, inst.vm_state) if inst else ("", None)

    (usage,) = tenant_usage(ledger, began - 1000, end, now=end, instance_info=info)
    assert usage["tenant_id"] == project_id
    servers_used = {s["instance_id"]: s for s in usage["server_usages"]}
    assert set(servers_used) == set(ids), "the build that never spawned must cost nothing"
    for instance_id in ids:
        used, inst = servers_used[instance_id], cloud.instance(instance_id)
        assert used["name"] == inst.name and used["flavor"] == inst.flavor["name"]  # type: ignore[index]
        assert used["memory_mb"] == inst.flavor["ram_mb"] and used["hours"] > 0  # type: ignore[index]
        expected_end = inst.terminated_at or end
        assert used["hours"] == pytest.approx((expected_end - inst.launched_at) / 3_600_000)  # type: ignore[operator]
    assert {servers_used[i]["state"] for i in ids[:2]} == {"terminated"}
    assert {servers_used[i]["state"] for i in ids[2:]} == {"active"}
    assert usage["total_memory_mb_usage"] == pytest.approx(
        sum(s["memory_mb"] * s["hours"] for s in servers_used.values()))

    log_ = cloud.cluster.open_log()
    assert ledger_from_log(log_, cloud.cluster.codec).usages == ledger_from_instance_events(
        log_, cloud.cluster.codec).usages

    rows = list(csv.DictReader(io.StringIO(run_usage_cli(cloud, "--format", "csv"))))
    assert {r["instance_id"] for r in rows} == set(ids)
    assert {(r["project_id"], r["project_name"]) for r in rows} == {(project_id, "demo")}
    assert {r["instance_name"] for r in rows} == {f"web-{n}" for n in range(4)}
    by_flavor = json.loads(run_usage_cli(cloud, "--format", "json", "--by", "flavor", "--project", "demo"))
    flavors = sorted((r["flavor"], r["instances"]) for r in by_flavor["rows"])
    assert flavors == [("m1.small", 2), ("m1.tiny", 2)]
    assert by_flavor["rows"][0]["project_name"] == "demo" and user_id


# -- exactly once, with a real billing process killed at arbitrary points ----------------------
def spawn_and_delete_events(count: int, rng: random.Random) -> list[Event]:
    """What the spawners write for `count` instances; every third is deleted again."""
    events: list[Event] = []
    for _ in range(count):
        instance_id, flavor = str(uuid.uuid4()), rng.choice(FLAVORS)
        launched = now_ms() - rng.randint(0, 7_200_000)
        body = {"host": f"compute-{rng.randint(1, 3)}", "domain_name": "instance-0", "power_state": 1,
                "launched_at": launched, "attempt": 1, "flavor": {**flavor, "ephemeral_gb": flavor.get(
                    "ephemeral_gb", 0), "swap_mb": 0, "extra_specs": {}}, "addresses": []}
        project = f"project-{rng.randint(1, 3)}"
        events.append(new_event(EventType.INSTANCE_SPAWNED, instance_id, body, project_id=project,
                                sequence=5))
        if rng.random() < 1 / 3:
            events.append(new_event(EventType.INSTANCE_DELETED, instance_id, {
                "host": body["host"], "terminated_at": launched + rng.randint(1, 3_600_000),
                "stage": "spawner"},
                project_id=project, sequence=7))
    return events


def committed(log_: EventLog) -> int:
    """How far the billing group has committed on its input topics (a sum of offsets)."""
    return sum(sum(log_.committed(GROUP, str(t)).values()) for t in (Topic.SPAWNED, Topic.DELETED))


def billing_process(config: LogConfig, data_dir: Path) -> subprocess.Popen[bytes]:
    """`eventsvm run billing` as a real process, with a stable member name (a restart fences its old self)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "eventsvm.app.cli", "run", "billing", "--log", config.url, "--namespace",
               config.namespace, "--partitions", str(config.partitions), "--member", "billing-1",
               "--data-dir", str(data_dir)]  # the writers' keys: it trusts only what they signed
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 60)
    line = process.stdout.readline() if ready else b""
    assert b"billing running" in line, f"billing did not start: {line!r}"
    return process


def wait_for_progress(log_: EventLog, since: int, process: subprocess.Popen[bytes], timeout: float) -> int:
    """Wait until the billing group has committed past `since`; the new committed count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done = committed(log_)
        except LogUnavailable:
            # Kafka: the killed member's open transaction holds its offsets "unstable" until the
            # new member's producer fences it.
            done = since
        if done > since:
            return done
        if process.poll() is not None:
            pytest.fail(f"billing process exited early: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        time.sleep(0.05)
    pytest.fail(f"billing made no progress past {since} records in {timeout} s")


def wait_for_output(log_: EventLog, codec: Codec, since: int, process: subprocess.Popen[bytes]) -> None:
    """Wait until billing has written more than `since` records."""
    deadline = time.monotonic() + 90
    while read_log(log_, codec, (Topic.BILLING,), lambda _e: None) <= since:
        assert time.monotonic() < deadline, f"billing wrote nothing past {since} records in 90 s"
        assert process.poll() is None, process.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
        time.sleep(0.01)


def test_billing_killed_at_arbitrary_points_still_records_each_usage_exactly_once(
        engine_url: tuple[str, str], tmp_path: Path) -> None:
    url, namespace = engine_url
    config = LogConfig(url=url, namespace=namespace, partitions=3, session_timeout_s=6.0)
    codec, rng = Codec(), random.Random(7)
    log_ = open_log(config)
    log_.create_topics([str(t) for t in (Topic.SPAWNED, Topic.DELETED, Topic.BILLING, Topic.DEAD_LETTER)])
    produced: list[Event] = []
    producing = threading.Event()
    producing.set()

    def produce() -> None:
        while producing.is_set():
            batch = spawn_and_delete_events(15, rng)
            log_.append(signed_records(tmp_path, batch))  # as the spawners sign them
            produced.extend(batch)
            time.sleep(0.1)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    kills_with_work_pending = 0
    done = 0
    try:
        for _ in range(3):
            process = billing_process(config, tmp_path)
            done = wait_for_progress(log_, done, process, timeout=90)
            # a burst the process cannot finish at once, and the kill once the log shows it is
            # part-way in: a steady trickle alone is written as fast as it comes on a quiet machine
            before_burst = read_log(log_, codec, (Topic.BILLING,), lambda _e: None)
            burst = spawn_and_delete_events(1500, rng)  # ~2000 inputs: several 500-record steps
            log_.append(signed_records(tmp_path, burst))
            produced.extend(burst)
            in_log = len(produced)  # inputs appended before the kill (the producer goes on after it)
            wait_for_output(log_, codec, before_burst, process)
            time.sleep(rng.uniform(0.0, 0.05))  # somewhere in the middle of a later step
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            # one output per input; what was written is final once the process is dead
            written = read_log(log_, codec, (Topic.BILLING,), lambda _e: None)
            kills_with_work_pending += written < in_log
    finally:
        producing.clear()
        producer.join(timeout=10)
    process = billing_process(config, tmp_path)
    try:
        deadline = time.monotonic() + 120
        # records, not offsets: on Kafka transaction markers take offsets no consumer commits past
        while (written := read_log(log_, codec, (Topic.BILLING,), lambda _e: None)) < len(produced):
            assert time.monotonic() < deadline, f"billing wrote {written} of {len(produced)} records"
            assert process.poll() is None, process.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert kills_with_work_pending >= 1, "every kill landed after all the work was done: nothing was tested"

    records: Counter[tuple[str, str]] = Counter()
    spawned, deleted = set(), set()

    def count(event: Event) -> None:
        if event.type in (EventType.USAGE_OPENED, EventType.USAGE_CLOSED):
            records[event.type.value, event.aggregate_id] += 1
        elif event.type == EventType.INSTANCE_SPAWNED:
            spawned.add(event.aggregate_id)
        elif event.type == EventType.INSTANCE_DELETED:
            deleted.add(event.aggregate_id)

    read_log(log_, codec, (Topic.BILLING, Topic.SPAWNED, Topic.DELETED), count)
    letters: list[Event] = []
    read_log(log_, codec, (Topic.DEAD_LETTER,), letters.append)
    assert letters == []
    assert {i for (kind, i) in records if kind == "billing.usage_opened"} == spawned
    assert {i for (kind, i) in records if kind == "billing.usage_closed"} == deleted
    duplicates = {key: n for key, n in records.items() if n > 1}
    assert duplicates == {}, f"{len(duplicates)} usage records written twice"

    ledger, recomputed = ledger_from_log(log_, codec), ledger_from_instance_events(log_, codec)
    assert ledger.usages == recomputed.usages
    moment = now_ms()
    assert tenant_usage(ledger, moment - 86_400_000, moment, now=moment) == tenant_usage(
        recomputed, moment - 86_400_000, moment, now=moment)
    log_.close()
