"""One instance's whole timeline from the log, and the same history as Nova's os-instance-actions.

`eventsvm history SERVER` reads the instance topics and decodes only the records keyed by the
instance (every instance event is keyed by its UUID), so looking one server up costs a scan of the
keys, not a decode of the log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eventsvm.events.codec import Codec, CodecError
from eventsvm.events.model import INSTANCE_TOPICS, Event, EventType, Topic, event_hash
from eventsvm.log.port import BEGINNING, EventLog, Record
from eventsvm.projections.readmodel import Models
from eventsvm.projections.replay import Drain
from eventsvm.state.instances import ACTION_EVENT_NAMES, EDIT_EVENT_TYPES, action_step_name
from eventsvm.state.server_moves import MOVE_EVENT_TYPES

# a move's request, its steps and its failure (eventsvm.state.server_moves)
_MOVE_TYPES = MOVE_EVENT_TYPES
_MOVE_STEPS = frozenset({EventType.INSTANCE_MOVE_STEP.value, EventType.INSTANCE_MOVE_FAILED.value})
# the requests that open an action named in their body, and the steps named in theirs
_NAMED = frozenset({EventType.INSTANCE_ACTION_REQUESTED.value, *(t.value for t in _MOVE_TYPES)})
# The boot flow in order: the stage that follows an event is the one a failure right after it hit.
_FLOW = (EventType.INSTANCE_REQUESTED, EventType.INSTANCE_AUTHENTICATED, EventType.INSTANCE_SCHEDULED,
         EventType.INSTANCE_RESOURCES_RESOLVED, EventType.INSTANCE_SPAWNED)
_RANK = {t.value: i for i, t in enumerate((*_FLOW, EventType.INSTANCE_FAILED,
                                           EventType.INSTANCE_DELETE_REQUESTED,
                                           EventType.INSTANCE_DELETE_DISPATCHED, EventType.INSTANCE_DELETED,
                                           EventType.INSTANCE_UPDATED,
                                           EventType.INSTANCE_METADATA_CHANGED,
                                           EventType.INSTANCE_TAGS_CHANGED,
                                           EventType.INSTANCE_ACTION_REQUESTED,
                                           EventType.INSTANCE_ACTION_COMPLETED,
                                           EventType.INSTANCE_ACTION_FAILED,
                                           *_MOVE_TYPES))}
# nova's action names for the requests that open an action (a server action is named in its body)
_ACTIONS = {EventType.INSTANCE_REQUESTED.value: "create", EventType.INSTANCE_DELETE_REQUESTED.value: "delete"}
_ACTION_STEPS = frozenset({EventType.INSTANCE_ACTION_COMPLETED.value, EventType.INSTANCE_ACTION_FAILED.value})
# a failed step: of the boot (INSTANCE_FAILED, first), of a server action, of a move
_FAILURES = (EventType.INSTANCE_FAILED.value, EventType.INSTANCE_ACTION_FAILED.value,
             EventType.INSTANCE_MOVE_FAILED.value)
_Step = tuple[str, int, str, str | None, str | None, bool, str | None]


class UnknownServer(LookupError):
    """No instance, or more than one, answers to the name or id given."""


@dataclass(frozen=True)
class Stage:
    """One event of an instance with where and when it was stored."""

    event: Event
    topic: str
    partition: int
    offset: int
    stored_at: int
    digest: str


def _scan(log: EventLog, topics: Sequence[str], keep: Any) -> list[Record]:
    existing = set(log.list_topics())
    reader = log.reader([t for t in topics if t in existing], BEGINNING)
    found: list[Record] = []
    try:
        for records in Drain(reader):
            found.extend(r for r in records if keep(r))
    finally:
        reader.close()
    return found


def find_instance(log: EventLog, codec: Codec, ref: str) -> str:
    """The id of the instance `ref` names: its UUID, or a name exactly one instance has."""
    key = ref.encode()
    if _scan(log, [str(Topic.REQUESTED)], lambda r: r.key == key):
        return ref
    ids: set[str] = set()
    for record in _scan(log, [str(Topic.REQUESTED)], lambda r: True):
        try:
            event = codec.decode(record.value)
        except CodecError:
            continue
        if event.body.get("name") == ref:
            ids.add(event.aggregate_id)
    if len(ids) == 1:
        return ids.pop()
    if not ids:
        raise UnknownServer(f"no server with id or name {ref!r}")
    raise UnknownServer(f"{len(ids)} servers are named {ref!r}; give an id: {', '.join(sorted(ids))}")


def instance_stages(log: EventLog, codec: Codec, instance_id: str) -> list[Stage]:
    """Every stored event of one instance, in chain order (sequence, then time)."""
    key = instance_id.encode()
    stages: list[Stage] = []
    for record in _scan(log, [str(t) for t in INSTANCE_TOPICS], lambda r: r.key == key):
        try:
            event = codec.decode(record.value)
        except CodecError:
            continue  # `eventsvm audit verify` names it; a timeline shows what can be read
        stages.append(Stage(event, record.topic, record.partition, record.offset, record.timestamp_ms,
                            event_hash(record.value)))
    stages.sort(key=lambda s: (s.event.sequence, s.event.occurred_at, _RANK[s.event.type.value]))
    return stages


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _duration(ms: int) -> str:
    if ms < 1000:
        return f"+{ms}ms"
    if ms < 120_000:
        return f"+{ms / 1000:.1f}s"
    return f"+{ms // 60_000}m{ms % 60_000 // 1000:02d}s"


def timeline_lines(stages: Sequence[Stage]) -> list[str]:
    """The timeline as text: one line per stage, with what failed and each reschedule."""
    if not stages:
        return []
    first = stages[0].event
    lines = [f"instance {first.aggregate_id}" + (f" ({first.body['name']})" if "name" in first.body else ""),
             f"  asked by user {first.user_id} of project {first.project_id}, request {first.request_id}"]
    previous: Event | None = None
    for stage in stages:
        e, body = stage.event, stage.event.body
        since = _duration(e.occurred_at - previous.occurred_at) if previous is not None else ""
        parts = [f"  #{e.sequence:<3} {_iso(e.occurred_at)} {since:>9}  {e.type.value:<28}"]
        if body.get("action"):
            kind = f" ({body['reboot_type']})" if body.get("reboot_type") else ""
            parts.append(f"action={body['action']}{kind}")
        if body.get("host"):
            parts.append(f"host={body['host']}")
        if body.get("image_id"):
            parts.append(f"image={body['image_id']}")
        if body.get("attempt") and (body["attempt"] > 1 or e.type == EventType.INSTANCE_SCHEDULED):
            parts.append(f"attempt={body['attempt']}")
        if e.request_id != first.request_id:
            parts.append(f"request={e.request_id} user={e.user_id}")
        lines.append(" ".join(parts).rstrip())
        if e.type in EDIT_EVENT_TYPES:
            lines.append(f"        {_edit_summary(e)}")
        if e.type == EventType.INSTANCE_FAILED:
            verdict = "final: the server is in ERROR" if body.get("final") else (
                "will be rescheduled" if body.get("retryable") else "not retryable")
            lines.append(f"        failed at {body.get('stage')} ({verdict}): {body.get('reason')}")
            if body.get("details"):
                lines.append(f"        {str(body['details'])[:300]}")
        if e.type == EventType.INSTANCE_ACTION_FAILED:
            lines.append(f"        {body.get('action')} failed: {body.get('reason')}")
        elif e.type in _MOVE_TYPES:
            lines.append(f"        {_move_summary(body)}")
        elif e.type == EventType.INSTANCE_ACTION_COMPLETED and body.get("detail"):
            lines.append(f"        {body['detail']}")
        lines.append(f"        stored {stage.topic}:{stage.partition}:{stage.offset} event {e.event_id}")
        previous = e
    span = stages[-1].event.occurred_at - first.occurred_at
    lines.append(f"  {len(stages)} events over {_duration(span)[1:]}")
    return lines


def _move_summary(body: dict[str, Any]) -> str:
    where = " -> ".join(h for h in (body.get("source_host"), body.get("dest_host")) if h)
    flavors = " -> ".join(f["name"] for f in (body.get("old_flavor"), body.get("flavor")) if f)
    said = f"{body['step']}: {body['vm_state']}/{body.get('task_state')}"
    parts = [said, where, flavors if body["action"] in ("resize", "confirmResize", "revertResize") else ""]
    if body.get("reason"):
        parts.append(f"failed: {body['reason']}")
    return "  ".join(p for p in parts if p)


def _edit_summary(event: Event) -> str:
    body = event.body
    if event.type == EventType.INSTANCE_UPDATED:
        changed = {"name": body.get("name"), "accessIPv4": body.get("access_ipv4"),
                   "accessIPv6": body.get("access_ipv6")}
        return "updated " + " ".join(f"{k}={v!r}" for k, v in changed.items() if v is not None)
    how = "metadata replaced:" if body.get("replace") else "metadata"
    parts = [f"set {', '.join(sorted(body['set']))}"] if body.get("set") else []
    if body.get("removed"):
        parts.append(f"removed {', '.join(sorted(body['removed']))}")
    return f"{how} {'; '.join(parts) or 'emptied'}"


# -- os-instance-actions ----------------------------------------------------------------------------
def _nova_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _steps(models_or_events: Models | Sequence[Event] | Sequence[Stage], instance_id: str
           ) -> tuple[list[_Step], str | None]:
    """(type, occurred_at, request id, user id, host, final failure, server action name) of each
    event, and the project."""
    if isinstance(models_or_events, Models):
        inst = models_or_events.instances.get(instance_id)
        if inst is None:
            return [], None
        # the projection keeps the failure's reason, not whether it was final: the fault tells
        final_at = inst.fault["created"] if inst.fault else None
        return ([(kind, at, req, user, host, kind == EventType.INSTANCE_FAILED.value and at == final_at,
                  detail if kind in _NAMED else None)
                 for kind, at, req, user, host, detail in inst.actions], inst.project_id)
    events = [s.event if isinstance(s, Stage) else s for s in models_or_events]
    events = [e for e in events if e.aggregate_id == instance_id]
    project = next((e.project_id for e in events if e.type == EventType.INSTANCE_REQUESTED), None)
    return ([(e.type.value, e.occurred_at, e.request_id, e.user_id, e.body.get("host"),
              e.type == EventType.INSTANCE_FAILED and bool(e.body.get("final")),
              _named(e))
             for e in events], project)


def _named(event: Event) -> str | None:
    """The action a request names, or the step a move's step names; None for other events."""
    if event.type.value in _MOVE_STEPS:
        return str(event.body["step"])
    return event.body.get("action") if event.type.value in _NAMED else None


def instance_actions(models_or_events: Models | Sequence[Event] | Sequence[Stage],
                     instance_id: str) -> list[dict[str, Any]]:
    """Nova's os-instance-actions for one instance, newest action first: one action per request
    (create, delete), each with its events (stage, start and finish time, result, host). Edits of
    the server (name, metadata) are no instance action in nova, so they are left out here."""
    steps, project_id = _steps(models_or_events, instance_id)
    edits = {kind.value for kind in EDIT_EVENT_TYPES}
    steps = [step for step in steps if step[0] not in edits]
    by_request: dict[str, list[_Step]] = {}
    for step in sorted(steps, key=lambda s: (s[1], _RANK.get(s[0], 99))):
        by_request.setdefault(step[2], []).append(step)
    actions: list[dict[str, Any]] = []
    for request_id, group in by_request.items():
        opening = group[0]
        events: list[dict[str, Any]] = []
        started, succeeded = opening[1], opening[0]
        for step in group[1:]:
            kind = step[0]
            failed = kind in _FAILURES
            if kind in _MOVE_STEPS:
                name = step[6] or "compute_move_instance"
            elif kind in _ACTION_STEPS:
                name = action_step_name(opening[6] or "action")
            elif failed:
                # nova names a failure after the stage it hit: the one that follows the last success
                name = _failed_stage(succeeded)
            else:
                name = ACTION_EVENT_NAMES[EventType(kind)]
            events.append({"event": name, "start_time": _nova_time(started),
                           "finish_time": _nova_time(step[1]), "result": "Error" if failed else "Success",
                           "host": step[4], "traceback": None})
            started = step[1]
            if not failed:
                succeeded = kind
        if opening[6] in ("lock", "unlock"):
            # decided by the API alone, as nova's api_lock / api_unlock
            events.append({"event": f"api_{opening[6]}", "start_time": _nova_time(opening[1]),
                           "finish_time": _nova_time(opening[1]), "result": "Success", "host": None,
                           "traceback": None})
        actions.append({
            "action": opening[6] or _ACTIONS.get(opening[0], ACTION_EVENT_NAMES[EventType(opening[0])]),
            "instance_uuid": instance_id, "request_id": request_id, "user_id": opening[3],
            "project_id": project_id, "start_time": _nova_time(opening[1]),
            "updated_at": _nova_time(group[-1][1]),
            "message": "Error" if any(s[5] or s[0] in _FAILURES[1:] for s in group)
            else None,
            "events": events,
        })
    actions.sort(key=lambda a: a["start_time"], reverse=True)
    return actions


def _failed_stage(previous_kind: str) -> str:
    rank = _RANK.get(previous_kind, -1)
    if 0 <= rank < len(_FLOW) - 1:
        return ACTION_EVENT_NAMES[_FLOW[rank + 1]]
    return ACTION_EVENT_NAMES[EventType.INSTANCE_FAILED]
