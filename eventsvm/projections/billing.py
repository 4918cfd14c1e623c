"""Usage, as nova's os-simple-tenant-usage counts it: what each instance cost from spawned to deleted.

The billing service (consumers/billing.py) answers each `instance.spawned` with one
`billing.usage_opened` and each `instance.deleted` with one `billing.usage_closed` on
`eventsvm.billing.usage`, committed together with its input offsets. That topic is the ledger the
API and `eventsvm usage` read. `ledger_from_instance_events` recomputes the same ledger straight
from the instance topics: what an audit (and the exactly-once test) compares the ledger with.

Nova's rules: an instance costs from `launched_at` to `terminated_at`, clipped to the period; one
still running costs up to now; one that never launched costs nothing; disk is root + ephemeral GB.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from eventsvm.events.codec import Codec, CodecError
from eventsvm.events.model import Event, Topic, now_ms
from eventsvm.log.port import BEGINNING, EventLog, Reader, Record
from eventsvm.state.usage import (
    Usage,
    UsageLedger,
    evolve_ledger,
    fold_instance_event,
)

log = logging.getLogger(__name__)


def _folded(fold: Callable[[Event], Any], event: Event, record: Record) -> bool:
    """Fold one event; one the fold cannot apply is skipped with a warning, never the rest. Its
    dead letter is the billing service's, whose state is the same fold over the same topic."""
    try:
        fold(event)
    except Exception as exc:
        log.warning("billing: skipped %s@%d/%d, which the fold cannot apply: %s: %s",
                    record.topic, record.partition, record.offset, type(exc).__name__, exc)
        return False
    return True


def read_log(log_: EventLog, codec: Codec, topics: Iterable[Topic], fold: Callable[[Event], Any]) -> int:
    """Feed every event of `topics`, from the beginning to the end as of now, to `fold`."""
    names = [str(t) for t in topics]
    log_.create_topics(names)
    reader = log_.reader(names, BEGINNING)
    count = 0
    try:
        while True:
            records = reader.poll(5000, timeout=0.05)
            for record in records:
                try:
                    event = codec.decode(record.value)
                except CodecError:
                    continue  # its consumer (or, on the ledger, the billing service) dead-letters it
                count += _folded(fold, event, record)
            if not records and reader.at_end():
                return count
    finally:
        reader.close()


def ledger_from_log(log_: EventLog, codec: Codec) -> UsageLedger:
    """The ledger as the billing service has written it (the billing topic, folded)."""
    ledger = UsageLedger()
    read_log(log_, codec, (Topic.BILLING,), lambda e: evolve_ledger(ledger, e))
    return ledger


def ledger_from_instance_events(log_: EventLog, codec: Codec) -> UsageLedger:
    """The ledger recomputed from the instance topics, without the billing service."""
    ledger = UsageLedger()
    read_log(log_, codec, (Topic.SPAWNED, Topic.DELETED, Topic.ACTION_REQUESTED),
             lambda e: fold_instance_event(ledger, e))
    return ledger


class LedgerView:
    """The ledger for a long-running reader (the API): folded once, then caught up on each read."""

    def __init__(self, log_: EventLog, codec: Codec) -> None:
        self.log = log_
        self.codec = codec
        self._ledger = UsageLedger()
        self._reader: Reader | None = None
        self._lock = threading.Lock()

    def current(self) -> UsageLedger:
        """Everything the billing service has committed so far, as a copy."""
        with self._lock:
            if self._reader is None:
                self.log.create_topics([str(Topic.BILLING)])
                self._reader = self.log.reader([str(Topic.BILLING)], BEGINNING)
            while True:
                records = self._reader.poll(5000, timeout=0.05)
                for record in records:
                    try:
                        event = self.codec.decode(record.value)
                    except CodecError:
                        continue
                    _folded(lambda e: evolve_ledger(self._ledger, e), event, record)
                if not records and self._reader.at_end():
                    return self._ledger.snapshot()

    def close(self) -> None:
        """Release the reader."""
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None


# -- nova's os-simple-tenant-usage ------------------------------------------------------------
def iso_time(ms: int | None) -> str | None:
    """Nova's usage timestamp form, `2026-11-26T09:29:43.348000` (UTC, no zone)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


InstanceInfo = Callable[[str], tuple[str, str | None]]


def _in_period(usage: Usage, start_ms: int, end_ms: int) -> bool:
    assert usage.started_at is not None
    return usage.started_at <= end_ms and (usage.ended_at is None or usage.ended_at >= start_ms)


def tenant_usage(ledger: UsageLedger, start_ms: int, end_ms: int, *, project_id: str | None = None,
                 detailed: bool = True, now: int | None = None, instance_info: InstanceInfo | None = None
                 ) -> list[dict[str, Any]]:
    """Nova's `tenant_usages` for the period: one summary per project that had a billable instance.

    `instance_info(instance_id) -> (name, vm_state)` names the servers (the ledger holds no names);
    without it names are empty and a running server's state is `active`. Raises ValueError when the
    period does not start before it ends (nova's 400).
    """
    if not start_ms < end_ms:
        raise ValueError("Invalid start time. The start time cannot occur after the end time.")
    moment = now_ms() if now is None else now
    summaries: dict[str, dict[str, Any]] = {}
    # a resized instance is one entry per flavor it had (nova's has one, at the current flavor)
    usages = sorted((part for u in ledger.usages.values() if u.billable and u.project_id is not None
                     for part in u.segments()),
                    key=lambda u: (u.started_at or 0, u.instance_id))
    for usage in usages:
        assert usage.project_id is not None and usage.flavor is not None and usage.started_at is not None
        other_project = project_id is not None and usage.project_id != project_id
        if other_project or not _in_period(usage, start_ms, end_ms):
            continue
        hours = usage.hours(start_ms, end_ms, moment)
        vcpus, memory_mb, local_gb = int(usage.flavor["vcpus"]), int(usage.flavor["ram_mb"]), usage.local_gb
        summary = summaries.get(usage.project_id)
        if summary is None:
            summary = summaries[usage.project_id] = {
                "tenant_id": usage.project_id, "total_local_gb_usage": 0.0, "total_vcpus_usage": 0.0,
                "total_memory_mb_usage": 0.0, "total_hours": 0.0, "start": iso_time(start_ms),
                "stop": iso_time(end_ms),
            }
            if detailed:
                summary["server_usages"] = []
        summary["total_local_gb_usage"] += local_gb * hours
        summary["total_vcpus_usage"] += vcpus * hours
        summary["total_memory_mb_usage"] += memory_mb * hours
        summary["total_hours"] += hours
        if detailed:
            name, vm_state = instance_info(usage.instance_id) if instance_info else ("", None)
            ended = usage.ended_at is not None
            summary["server_usages"].append({
                "instance_id": usage.instance_id, "name": name, "hours": hours, "memory_mb": memory_mb,
                "local_gb": local_gb, "vcpus": vcpus, "tenant_id": usage.project_id,
                "flavor": usage.flavor["name"], "started_at": iso_time(usage.started_at),
                "ended_at": iso_time(usage.ended_at),
                "state": "terminated" if ended else (vm_state or "active"),
                "uptime": int(((usage.ended_at if ended else moment) or 0) - usage.started_at) // 1000,
            })
    return [summaries[k] for k in sorted(summaries)]


# -- export -----------------------------------------------------------------------------------
EXPORT_COLUMNS: dict[str, tuple[str, ...]] = {
    "instance": ("project_id", "project_name", "instance_id", "instance_name", "flavor", "vcpus", "memory_mb",
                 "local_gb", "started_at", "ended_at", "hours", "vcpu_hours", "memory_mb_hours",
                 "local_gb_hours"),
    "flavor": ("project_id", "project_name", "flavor", "vcpus", "memory_mb", "local_gb", "instances", "hours",
               "vcpu_hours", "memory_mb_hours", "local_gb_hours"),
    "project": ("project_id", "project_name", "instances", "hours", "vcpu_hours", "memory_mb_hours",
                "local_gb_hours"),
}
_KEYS = {"instance": ("project_id", "instance_id"), "flavor": ("project_id", "flavor"),
         "project": ("project_id",)}


def usage_rows(ledger: UsageLedger, start_ms: int, end_ms: int, *, by: str = "instance",
               project_id: str | None = None, now: int | None = None,
               project_names: Mapping[str, str] | None = None,
               instance_names: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The export's rows, one per instance, per project and flavor, or per project (`by`); each
    names the project by id and by name. Hours and *_hours are rounded to 6 decimals."""
    if by not in EXPORT_COLUMNS:
        raise ValueError(f"cannot group usage by {by!r}; use one of {', '.join(EXPORT_COLUMNS)}")
    names = project_names or {}
    rows: dict[tuple[str, ...], dict[str, Any]] = {}
    for summary in tenant_usage(ledger, start_ms, end_ms, project_id=project_id, now=now):
        for server in summary["server_usages"]:
            line = {
                "project_id": server["tenant_id"], "project_name": names.get(server["tenant_id"], ""),
                "instance_id": server["instance_id"],
                "instance_name": (instance_names or {}).get(server["instance_id"], ""),
                "flavor": server["flavor"], "vcpus": server["vcpus"], "memory_mb": server["memory_mb"],
                "local_gb": server["local_gb"], "started_at": server["started_at"],
                "ended_at": server["ended_at"],
                "instances": 1, "hours": server["hours"], "vcpu_hours": server["vcpus"] * server["hours"],
                "memory_mb_hours": server["memory_mb"] * server["hours"],
                "local_gb_hours": server["local_gb"] * server["hours"],
            }
            key = tuple(str(line[k]) for k in _KEYS[by])
            row = rows.get(key)
            if row is None:
                rows[key] = {c: line[c] for c in EXPORT_COLUMNS[by]}
                continue
            for column in ("instances", "hours", "vcpu_hours", "memory_mb_hours", "local_gb_hours"):
                row[column] += line[column]
    result = [rows[k] for k in sorted(rows)]
    for row in result:
        for column in ("hours", "vcpu_hours", "memory_mb_hours", "local_gb_hours"):
            row[column] = round(row[column], 6)
    return result
