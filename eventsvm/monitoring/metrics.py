"""The pipeline as on-call sees it: Prometheus metrics and the numbers behind the dashboard.

Fed by the read model's listener hook, so the API process folds the log once and the monitor
rides along: no second consumer group, and the metrics describe exactly what the API serves.
The fold is order-independent (topics may be read in any order on a replay): a stage-to-stage
latency is observed once both of its events have arrived, whichever came first, and an instance's
current stage comes from its highest-ranked event, as in the instance read model.

Label values are bounded: stages and types are enums, failure reasons are mapped onto a fixed set
of categories (the full text goes only to the dashboard's recent-failures list), hosts are the
registered compute hosts.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from eventsvm.events.model import INSTANCE_TOPICS, TOPIC_OF, Event, EventType, Topic, now_ms
from eventsvm.scheduler.claims import recorded_claim

if TYPE_CHECKING:
    from eventsvm.projections.readmodel import Models, ReadModel

# the boot flow, in order; each name is a topic suffix (DESIGN §1)
FLOW = ("requested", "authenticated", "scheduled", "resources-resolved", "spawned")
TRANSITIONS = tuple(zip(FLOW, FLOW[1:], strict=False)) + (("requested", "spawned"),)
ALL_OBSERVED = (1 << len(TRANSITIONS)) - 1
STAGE_OF: dict[EventType, str] = {
    EventType.INSTANCE_REQUESTED: "requested",
    EventType.INSTANCE_AUTHENTICATED: "authenticated",
    EventType.INSTANCE_SCHEDULED: "scheduled",
    EventType.INSTANCE_RESOURCES_RESOLVED: "resources-resolved",
    EventType.INSTANCE_SPAWNED: "spawned",
    EventType.INSTANCE_DELETE_REQUESTED: "deleting",
    EventType.INSTANCE_DELETE_DISPATCHED: "deleting",
    EventType.INSTANCE_DELETED: "deleted",
}
# server actions happen to a server that has left the flow: counted as events, not as stages
_AFTER_THE_BOOT = frozenset({EventType.INSTANCE_ACTION_REQUESTED, EventType.INSTANCE_ACTION_COMPLETED,
                             EventType.INSTANCE_ACTION_FAILED})
# stages an instance waits in for a service to act; sitting in one too long is "stuck"
WAITING = ("requested", "authenticated", "scheduled", "resources-resolved", "rescheduling", "deleting")
FAILURE_STAGES = frozenset({"authenticate", "schedule", "resolve", "claim", "spawn"})
# (substring of the reason, category), first match wins; the failing services' own wording
REASON_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("Exceeded maximum number of retries", "retries_exhausted"),
    ("No valid host", "no_valid_host"),
    ("Insufficient compute resources", "insufficient_resources"),
    ("Quota exceeded", "quota_exceeded"),
    ("Authentication failed", "unauthenticated"),
    ("Policy doesn't allow", "forbidden"),
    ("could not be found", "not_found"),
    ("IP address", "no_address"),
    ("Build of instance", "hypervisor"),
)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
TOPIC_NAMES = frozenset(str(t) for t in Topic)
INSTANCE_TOPIC_NAMES = frozenset(str(t) for t in INSTANCE_TOPICS)
# For history folded before the monitor was attached, a failure's stage is not in the timeline:
# the reason names it when it can, else the stage the instance was in does.
_STAGE_OF_CATEGORY = {"hypervisor": "spawn", "insufficient_resources": "claim", "no_valid_host": "schedule",
                      "retries_exhausted": "schedule", "quota_exceeded": "authenticate",
                      "unauthenticated": "authenticate", "forbidden": "authenticate", "no_address": "resolve"}
_FAILED_AFTER = {"requested": "authenticate", "authenticated": "schedule", "scheduled": "resolve",
                 "resources-resolved": "spawn", "rescheduling": "schedule"}
# a timeline is in fold order, which a replay makes topic by topic: sort it by time, then flow
_TIMELINE_ORDER = {t.value: i for i, t in enumerate((
    EventType.INSTANCE_REQUESTED, EventType.INSTANCE_AUTHENTICATED, EventType.INSTANCE_SCHEDULED,
    EventType.INSTANCE_RESOURCES_RESOLVED, EventType.INSTANCE_FAILED, EventType.INSTANCE_SPAWNED,
    EventType.INSTANCE_DELETE_REQUESTED, EventType.INSTANCE_DELETE_DISPATCHED, EventType.INSTANCE_DELETED))}


def failure_category(reason: str, code: int | None = None) -> str:
    """A bounded label for a failure reason (the text itself is unbounded)."""
    for needle, category in REASON_CATEGORIES:
        if needle in reason:
            return category
    if code == 403:
        return "forbidden"
    if code == 400:
        return "bad_request"
    return "other"


@dataclass(slots=True)
class Track:
    """One instance as the monitor follows it: when it reached each stage, and where it is now."""

    times: dict[str, int] | None = field(default_factory=dict)  # None once every transition is observed
    observed: int = 0  # bit i: TRANSITIONS[i] was observed
    stage: str = "requested"
    since: int = 0
    rank: tuple[int, int] = (-1, -1)


@dataclass(frozen=True, slots=True)
class Failure:
    """One instance.failed, for the dashboard's recent-failures list."""

    at: int
    instance_id: str
    name: str
    stage: str
    category: str
    reason: str
    final: bool
    host: str | None


class PipelineMonitor:
    """Counters and histograms in its own registry, and the live numbers of the dashboard."""

    def __init__(self, stuck_after_s: float = 300.0, recent: int = 30, samples: int = 1000,
                 clock: Callable[[], int] = now_ms) -> None:
        self.stuck_after_ms = int(stuck_after_s * 1000)
        self.clock = clock
        self.registry = CollectorRegistry()
        self.events = Counter("eventsvm_events", "Events folded by the read model, by topic and type",
                              ["topic", "type"], registry=self.registry)
        self.failures = Counter("eventsvm_failures", "instance.failed events by stage and reason category",
                                ["stage", "reason", "final"], registry=self.registry)
        self.latency = Histogram("eventsvm_stage_latency_seconds",
                                 "Time between consecutive stages of one instance (occurred_at to "
                                 "occurred_at); requested->spawned is the whole build",
                                 ["from_stage", "to_stage"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.reschedules = Counter("eventsvm_reschedules",
                                   "Builds sent back to the scheduler after a host failed",
                                   registry=self.registry)
        self.dead_letters = Counter("eventsvm_dead_letters",
                                    "Records a service could not process, by source topic", ["topic"],
                                    registry=self.registry)
        # the labelled children, each made once: prometheus_client's labels() checks and locks on
        # every call, and the read model counts every event it folds (3 % of the API's CPU under load)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.passed: dict[str, int] = dict.fromkeys(FLOW, 0)
        self.samples: dict[tuple[str, str], deque[float]] = {t: deque(maxlen=samples) for t in TRANSITIONS}
        self.recent_failures: deque[Failure] = deque(maxlen=recent)
        self.tracks: dict[str, Track] = {}
        # deleted servers in the order their deletion was seen: each one's track is dropped once
        # the read model has forgotten the server (its retention of deleted servers), so the
        # tracks are bounded as the read model is, not by every server the cloud ever ran
        self._deleted: deque[str] = deque()
        self.lock = threading.Lock()
        self.readmodel: ReadModel | None = None
        self.extra_collectors: list[Collector] = []
        self.registry.register(_StateCollector(self))

    # -- feeding ---------------------------------------------------------------------------
    def attach(self, readmodel: ReadModel) -> None:
        """Follow `readmodel`: what it folded already is taken from its models, the rest as it comes."""
        with readmodel.lock:
            self.readmodel = readmodel
            self._replay_models(readmodel.models)
            readmodel.listeners.append(self.observe)

    def observe(self, event: Event, topic: str) -> None:
        """The read model's listener: fold one event (called under the read model's lock)."""
        self._count_event(topic if topic in TOPIC_NAMES else "other", event.type.value)
        kind = event.type
        if kind == EventType.DEAD_LETTER_RECORDED:
            source = event.body.get("source_topic", "")
            self.dead_letters.labels(source if source in TOPIC_NAMES else "other").inc()
            return
        if not kind.startswith("instance.") or kind in _AFTER_THE_BOOT:
            return
        body = event.body
        if kind == EventType.INSTANCE_FAILED:
            self._failed(event.aggregate_id, event.occurred_at, event.sequence, body["stage"], body["reason"],
                         bool(body["final"]), body.get("code"), body.get("host"))
        elif kind in STAGE_OF:  # an edit of the server (name, metadata) moves no stage
            self._reached(event.aggregate_id, STAGE_OF[kind], event.occurred_at, event.sequence)

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """`metric.labels(*labels)`, made on first use and kept."""
        key = (id(metric), labels)  # the monitor's own metrics, alive as long as it is
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _count_event(self, topic: str, kind: str) -> None:
        self._child(self.events, topic, kind).inc()

    def _replay_models(self, models: Models) -> None:
        # History folded before attach: the instance timelines hold each event's type, time and
        # reason, but not a failure's stage, which is taken from the stage the instance was in.
        for topic, count in models.events_by_topic.items():
            if topic not in INSTANCE_TOPIC_NAMES:
                self.events.labels(topic if topic in TOPIC_NAMES else "other", "unknown").inc(count)
        for letter in models.dead_letters:
            source = letter.body.get("source_topic", "")
            self.dead_letters.labels(source if source in TOPIC_NAMES else "other").inc()
        for inst in models.instances.instances.values():
            stage = "requested"
            timeline = sorted(inst.actions, key=lambda a: (a[1], _TIMELINE_ORDER.get(a[0], 0)))
            failures = [i for i, a in enumerate(timeline) if a[0] == EventType.INSTANCE_FAILED.value]
            for index, (kind, at, _rid, _user, host, detail) in enumerate(timeline):
                event_type = EventType(kind)
                self._count_event(str(TOPIC_OF[event_type]), kind)
                if event_type in _AFTER_THE_BOOT:
                    continue
                if event_type == EventType.INSTANCE_FAILED:
                    final = inst.status == "ERROR" and index == failures[-1]
                    failed_stage = _STAGE_OF_CATEGORY.get(failure_category(detail or ""),
                                                          _FAILED_AFTER.get(stage, "other"))
                    self._failed(inst.id, at, index + 1, failed_stage, detail or "", final, None, host)
                    stage = "rescheduling"
                elif event_type in STAGE_OF:
                    stage = STAGE_OF[event_type]
                    self._reached(inst.id, stage, at, index + 1)

    def _track(self, instance_id: str) -> Track:
        track = self.tracks.get(instance_id)
        if track is None:
            track = self.tracks[instance_id] = Track()
        return track

    def _move(self, track: Track, stage: str, at: int, rank: tuple[int, int]) -> None:
        if rank >= track.rank:
            track.rank, track.stage, track.since = rank, stage, at

    def _reached(self, instance_id: str, stage: str, at: int, sequence: int) -> None:
        with self.lock:
            track = self._track(instance_id)
            self._move(track, stage, at, (2 if stage == "deleted" else 0, sequence))
            if stage == "deleted" and self.readmodel is not None:  # unattached, nothing forgets
                self._deleted.append(instance_id)
                self._forget_deleted()
            if stage not in self.passed:
                return
            times = track.times
            if times is None or stage in times:
                if stage == "scheduled":
                    self.reschedules.inc()
                return
            times[stage] = at
            self.passed[stage] += 1
            for bit, (before, after) in enumerate(TRANSITIONS):
                if not track.observed & (1 << bit) and before in times and after in times:
                    track.observed |= 1 << bit
                    seconds = max(0, times[after] - times[before]) / 1000
                    self._child(self.latency, before, after).observe(seconds)
                    self.samples[before, after].append(seconds)
            if track.observed == ALL_OBSERVED:
                track.times = None  # a finished build keeps only its current stage

    def _forget_deleted(self) -> None:
        """Drop the tracks of deleted servers the read model no longer holds, oldest first (it
        forgets them in about the order they were deleted; the first it still holds stops the walk,
        so each deletion is looked at a few times at most)."""
        assert self.readmodel is not None
        held = self.readmodel.models.instances.instances
        deleted = self._deleted
        while deleted and deleted[0] not in held:
            instance_id = deleted.popleft()
            track = self.tracks.get(instance_id)
            if track is not None and track.stage == "deleted":
                del self.tracks[instance_id]

    def _failed(self, instance_id: str, at: int, sequence: int, stage: str, reason: str, final: bool,
                code: int | None, host: str | None) -> None:
        category = failure_category(reason, code)
        label = stage if stage in FAILURE_STAGES else "other"
        self.failures.labels(label, category, "true" if final else "false").inc()
        name = ""
        if self.readmodel is not None:
            inst = self.readmodel.models.instances.get(instance_id)
            name = inst.name if inst is not None else ""
        with self.lock:
            track = self._track(instance_id)
            self._move(track, "error" if final else "rescheduling", at, (1 if final else 0, sequence))
            failure = Failure(at, instance_id, name, label, category, reason[:500], final, host)
            self.recent_failures.append(failure)

    # -- reading ---------------------------------------------------------------------------
    def stages_now(self) -> tuple[dict[str, int], list[dict[str, Any]]]:
        """How many instances sit in each stage now, and the stuck ones (oldest first)."""
        now = self.clock()
        counts: dict[str, int] = {}
        stuck: list[dict[str, Any]] = []
        with self.lock:
            for instance_id, track in self.tracks.items():
                counts[track.stage] = counts.get(track.stage, 0) + 1
                if track.stage in WAITING and now - track.since > self.stuck_after_ms:
                    stuck.append({"id": instance_id, "stage": track.stage, "since": track.since,
                                  "seconds": (now - track.since) // 1000})
        stuck.sort(key=lambda s: s["since"])
        return counts, stuck

    def percentiles(self) -> list[dict[str, Any]]:
        """p50 / p90 / p99 (seconds) of the recent samples of each transition."""
        result = []
        with self.lock:
            samples = {t: sorted(s) for t, s in self.samples.items()}
        for (before, after), values in samples.items():
            row: dict[str, Any] = {"from": before, "to": after, "count": len(values)}
            for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
                row[name] = values[min(len(values) - 1, int(q * len(values)))] if values else None
            result.append(row)
        return result

    def failure_counts(self) -> list[dict[str, Any]]:
        """instance.failed events counted by stage, reason category and finality, as /metrics
        counts them: what the failures were, with no server or project in it."""
        rows = [
            {"stage": sample.labels["stage"], "category": sample.labels["reason"],
             "final": sample.labels["final"] == "true", "count": int(sample.value)}
            for metric in self.failures.collect() for sample in metric.samples
            if sample.name.endswith("_total")
        ]
        return sorted(rows, key=lambda r: (-r["count"], r["stage"], r["category"]))

    def failures_list(self) -> list[Failure]:
        """The recent failures, newest first."""
        with self.lock:
            return sorted(self.recent_failures, key=lambda f: f.at, reverse=True)


def host_usage(models: Models) -> list[dict[str, Any]]:
    """Per registered host: what its instances hold (vCPU, RAM MB, disk GB) against what the
    scheduler may place there (capacity × allocation ratio). Call under the read model's lock."""
    used: dict[str, list[int]] = {name: [0, 0, 0, 0] for name in models.hosts}
    for inst in models.instances.instances.values():
        if inst.host in used and inst.status in ("BUILD", "ACTIVE") and inst.flavor:
            held = recorded_claim(inst.claim, inst.flavor)
            totals = used[inst.host]
            totals[0] += held.vcpus
            totals[1] += held.ram_mb
            totals[2] += held.disk_gb
            totals[3] += 1
    hosts = []
    for name in sorted(models.hosts):
        host, (vcpus, ram, disk, count) = models.hosts[name], used[name]
        hosts.append({
            "name": name, "enabled": host.get("enabled", True), "instances": count,
            "vcpus": {"used": vcpus, "total": host["vcpus"] * host.get("cpu_allocation_ratio", 1.0)},
            "ram_mb": {"used": ram, "total": host["ram_mb"] * host.get("ram_allocation_ratio", 1.0)},
            "disk_gb": {"used": disk, "total": host["disk_gb"] * host.get("disk_allocation_ratio", 1.0)},
        })
    return hosts


class _StateCollector(Collector):
    """Gauges read at scrape time: instances by status and stage, stuck ones, host capacity."""

    def __init__(self, monitor: PipelineMonitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        monitor = self.monitor
        if monitor.readmodel is not None:
            with monitor.readmodel.lock:
                statuses = monitor.readmodel.models.instances.by_status()
                hosts = host_usage(monitor.readmodel.models)
            by_status = GaugeMetricFamily("eventsvm_instances", "Instances by API status", labels=["status"])
            for status, count in sorted(statuses.items()):
                by_status.add_metric([status], count)
            yield by_status
            used = GaugeMetricFamily("eventsvm_host_used", "Resources held by a host's instances",
                                     labels=["host", "resource"])
            limit = GaugeMetricFamily("eventsvm_host_capacity",
                                      "What the scheduler may place on a host (capacity x allocation ratio)",
                                      labels=["host", "resource"])
            for host in hosts:
                for resource in ("vcpus", "ram_mb", "disk_gb"):
                    used.add_metric([host["name"], resource], host[resource]["used"])
                    limit.add_metric([host["name"], resource], host[resource]["total"])
            yield used
            yield limit
        counts, stuck = monitor.stages_now()
        in_stage = GaugeMetricFamily("eventsvm_instances_in_stage",
                                     "Instances whose latest event is this stage", labels=["stage"])
        for stage, count in sorted(counts.items()):
            in_stage.add_metric([stage], count)
        yield in_stage
        stuck_gauge = GaugeMetricFamily(
            "eventsvm_instances_stuck",
            f"Instances waiting in a stage longer than {monitor.stuck_after_ms / 1000:g} s", labels=["stage"])
        for stage in WAITING:
            stuck_gauge.add_metric([stage], sum(1 for s in stuck if s["stage"] == stage))
        yield stuck_gauge
        for collector in monitor.extra_collectors:
            yield from collector.collect()
