"""Constructors for the events several services emit, so each body is built in one place."""

from __future__ import annotations

from typing import Any

from eventsvm.events.model import Event, EventType, new_event, now_ms


def failed(
    cause: Event,
    stage: str,
    reason: str,
    *,
    code: int = 500,
    retryable: bool = False,
    host: str | None = None,
    attempt: int = 1,
    details: str | None = None,
    alternates: list[str] | None = None,
    spec: dict[str, Any] | None = None,
    reservation_id: str | None = None,
) -> Event:
    """An instance.failed answering `cause`. Final unless `retryable` (a reschedule may follow).
    `reservation_id` names the request an authenticator's refusal refuses all servers of."""
    return new_event(
        EventType.INSTANCE_FAILED,
        cause.aggregate_id,
        {
            "stage": stage,
            "reason": reason,
            "code": code,
            "retryable": retryable,
            "final": not retryable,
            "host": host,
            "attempt": attempt,
            "details": details,
            "alternates": alternates or [],
            "spec": spec,
            "reservation_id": reservation_id,
        },
        cause=cause,
    )


def unshelve_failed(cause: Event, host: str | None, reason: str) -> Event:
    """The failure of an unshelve: the server stays SHELVED_OFFLOADED with no task and no host, the
    reason on its unshelve action (nova's conductor on NoValidHost, and compute's unshelve_instance
    whose reverts_task_state leaves the vm_state as it was when the spawn raised)."""
    body = {"action": "unshelve", "host": host or "", "vm_state": "shelved_offloaded", "power_state": 0,
            "reason": reason}
    return new_event(EventType.INSTANCE_ACTION_FAILED, cause.aggregate_id, body, cause=cause)


def placement_failed(
    cause: Event,
    stage: str,
    reason: str,
    *,
    spec: dict[str, Any] | None,
    code: int = 500,
    host: str | None = None,
    attempt: int = 1,
    details: str | None = None,
) -> Event:
    """The final failure of a placement: a boot's instance.failed (the server in ERROR), or, when
    the placement carries out an unshelve, the unshelve's failure (the server stays offloaded and
    keeps what it holds: its quota, its ports, its volumes)."""
    if spec and spec.get("unshelve"):
        return unshelve_failed(cause, host, f"{reason}: {details}" if details else reason)
    return failed(cause, stage, reason, code=code, host=host, attempt=attempt, details=details)


def deleted(cause: Event, host: str | None, stage: str) -> Event:
    """An instance.deleted answering `cause`: the instance is gone and frees what it held."""
    return new_event(
        EventType.INSTANCE_DELETED,
        cause.aggregate_id,
        {"host": host, "terminated_at": now_ms(), "stage": stage},
        cause=cause,
    )


def flavor_snapshot(flavor: dict[str, Any]) -> dict[str, Any]:
    """The flavor as embedded in an instance (the Flavor record of the schemas)."""
    return {
        "id": flavor["id"],
        "name": flavor["name"],
        "vcpus": flavor["vcpus"],
        "ram_mb": flavor["ram_mb"],
        "disk_gb": flavor["disk_gb"],
        "ephemeral_gb": flavor.get("ephemeral_gb", 0),
        "swap_mb": flavor.get("swap_mb", 0),
        "extra_specs": dict(flavor.get("extra_specs") or {}),
    }
