"""Usage, as nova's os-simple-tenant-usage counts it: what each instance cost from spawned to deleted.

The pure folds of the billing ledger, shared by the billing service (consumers/billing.py), the
API's usage view and the auditor's recomputation (eventsvm/projections/billing.py).

Nova's rules: an instance costs from `launched_at` to `terminated_at`, clipped to the period; one
still running costs up to now; one that never launched costs nothing; disk is root + ephemeral GB.
A resized instance costs each flavor it had for the time it had it, the new one from the resize's
confirmation (nova bills the whole life at the current flavor; see docs/decisions.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from eventsvm.events.model import Event, EventType
from eventsvm.state.compact import Departures
from eventsvm.state.server_moves import CONFIRM_RESIZE

MS_PER_HOUR = 3_600_000


@dataclass(slots=True)
class Usage:
    """One instance's billable life: who owns it, the flavor it is billed at, and when it ran."""

    instance_id: str
    project_id: str | None = None
    user_id: str | None = None
    host: str | None = None
    flavor: dict[str, Any] | None = None
    started_at: int | None = None
    ended_at: int | None = None
    # flavor changes after the launch (confirmed resizes): (from ms, flavor), in the order folded
    resizes: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def segments(self) -> list[Usage]:
        """The instance's life cut where its flavor changed: one Usage per flavor it had, in time
        order (itself when it was never resized)."""
        if not self.resizes or self.started_at is None:
            return [self]
        pieces: list[Usage] = []
        start, flavor = self.started_at, self.flavor
        for at, new in sorted(self.resizes, key=lambda change: change[0]):
            end = at if self.ended_at is None else min(at, self.ended_at)
            pieces.append(replace(self, flavor=flavor, started_at=start, ended_at=end, resizes=[]))
            start, flavor = at, new
        pieces.append(replace(self, flavor=flavor, started_at=start, resizes=[]))
        return pieces

    @property
    def billable(self) -> bool:
        """True once the instance launched: a build that never spawned costs nothing."""
        return self.started_at is not None and self.flavor is not None

    @property
    def local_gb(self) -> int:
        """Nova's local_gb: root plus ephemeral disk (swap is not counted)."""
        flavor = self.flavor or {}
        return int(flavor.get("disk_gb", 0)) + int(flavor.get("ephemeral_gb", 0))

    def hours(self, start_ms: int, end_ms: int, now: int) -> float:
        """Hours of the period [start_ms, end_ms] this instance ran; a running one up to `now`."""
        if self.started_at is None:
            return 0.0
        stop = min(end_ms, self.ended_at if self.ended_at is not None else now)
        begin = max(start_ms, self.started_at)
        return max(0, stop - begin) / MS_PER_HOUR


@dataclass
class UsageLedger:
    """Every instance's usage by id, plus how many records made it (for audits)."""

    usages: dict[str, Usage] = field(default_factory=dict)
    records: int = 0

    def _usage(self, instance_id: str) -> Usage:
        usage = self.usages.get(instance_id)
        if usage is None:
            usage = self.usages[instance_id] = Usage(instance_id)
        return usage

    def opened(self, instance_id: str, project_id: str | None, user_id: str | None, host: str,
               flavor: dict[str, Any], started_at: int) -> None:
        """The instance started to cost."""
        usage = self._usage(instance_id)
        usage.project_id, usage.user_id, usage.host = project_id, user_id, host
        usage.flavor, usage.started_at = billed_flavor(flavor), started_at
        self.records += 1

    def closed(self, instance_id: str, host: str | None, ended_at: int) -> None:
        """The instance stopped costing (it may never have started)."""
        usage = self._usage(instance_id)
        usage.ended_at = ended_at
        usage.host = usage.host or host
        self.records += 1

    def resized(self, instance_id: str, at: int, flavor: Mapping[str, Any]) -> None:
        """The instance costs `flavor` from `at` on. The same change read again (a copy of its
        record, which a reader of the ledger does not dead-letter) changes nothing: appended twice,
        it would bill a zero-hour row of its own."""
        change = (at, billed_flavor(flavor))
        resizes = self._usage(instance_id).resizes
        if change not in resizes:
            resizes.append(change)
        self.records += 1

    def is_resized(self, instance_id: str, at: int) -> bool:
        """True when the flavor change at `at` is already in the ledger."""
        usage = self.usages.get(instance_id)
        return usage is not None and any(when == at for when, _flavor in usage.resizes)

    def snapshot(self) -> UsageLedger:
        """A copy another thread may read while this one keeps folding."""
        return UsageLedger({k: replace(u, resizes=list(u.resizes)) for k, u in self.usages.items()},
                           self.records)

    def is_open(self, instance_id: str) -> bool:
        """True when a usage_opened for the instance is already in the ledger."""
        usage = self.usages.get(instance_id)
        return usage is not None and usage.started_at is not None

    def is_closed(self, instance_id: str) -> bool:
        """True when a usage_closed for the instance is already in the ledger."""
        usage = self.usages.get(instance_id)
        return usage is not None and usage.ended_at is not None


@dataclass
class BillingLedger(UsageLedger):
    """The billing service's ledger: only what it may still be asked to open, close or resize.

    Its one use is exactly-once: a spawned or deleted record read again finds its usage already
    opened or closed. A usage both opened and closed is complete; no input of its instance is in
    flight an hour of log time later (the horizon every service forgets a departed instance by,
    `--forget-departed-after-minutes`), so `settle_billing` then drops it: the reports read the
    whole billing topic (LedgerView), never this state. A usage closed but not yet opened stays:
    its deletion was read first, and its spawned may still come from the other topic, however
    late; it must open and close there, not open a bill that never ends."""

    complete: Departures = field(default_factory=Departures)


def evolve_billing(ledger: BillingLedger, event: Event) -> BillingLedger:
    """Fold one billing record, noting when (log time) a usage became complete."""
    evolve_ledger(ledger, event)
    if event.type in _ENDS:
        usage = ledger.usages.get(event.aggregate_id)
        if usage is not None and usage.started_at is not None and usage.ended_at is not None:
            ledger.complete.add(event.aggregate_id, event.occurred_at)
            return ledger
    ledger.complete.saw(event.occurred_at)
    return ledger


def settle_billing(ledger: BillingLedger) -> BillingLedger:
    """Drop the usages complete for longer than the services' horizon, in log time (Service.settle:
    the billing topic is folded to its end, so a record read late in a rebuild finds its usage)."""
    for instance_id in ledger.complete.forget():
        ledger.usages.pop(instance_id, None)
    return ledger


# the records that may complete a usage: the open of one closed first, the close of one opened
_ENDS = frozenset({EventType.USAGE_OPENED, EventType.USAGE_CLOSED})


def billed_flavor(flavor: Mapping[str, Any]) -> dict[str, Any]:
    """The flavor fields billing keeps (the BilledFlavor record of billing.usage_opened)."""
    return {"id": flavor["id"], "name": flavor["name"], "vcpus": flavor["vcpus"], "ram_mb": flavor["ram_mb"],
            "disk_gb": flavor["disk_gb"], "ephemeral_gb": flavor.get("ephemeral_gb", 0),
            "swap_mb": flavor.get("swap_mb", 0)}


def _fold(ledger: UsageLedger, event: Event, opening: tuple[EventType, str], closing: tuple[EventType, str]
          ) -> UsageLedger:
    """Open a record on an `opening` event, from the body's time field it names; close one on a
    `closing` event likewise. Other events leave the ledger as it is."""
    body = event.body
    if event.type == opening[0]:
        ledger.opened(event.aggregate_id, event.project_id, event.user_id, body["host"], body["flavor"],
                      body[opening[1]])
    elif event.type == closing[0]:
        ledger.closed(event.aggregate_id, body.get("host"), body[closing[1]])
    return ledger


def evolve_ledger(ledger: UsageLedger, event: Event) -> UsageLedger:
    """Fold one billing record; other events leave the ledger as it is."""
    ledger = _fold(ledger, event, (EventType.USAGE_OPENED, "started_at"),
                   (EventType.USAGE_CLOSED, "ended_at"))
    if event.type == EventType.USAGE_RESIZED:
        ledger.resized(event.aggregate_id, event.body["at"], event.body["flavor"])
    return ledger


def confirmed_resize(event: Event) -> bool:
    """Whether the event is a resize's confirmation, from which the new flavor is billed."""
    return event.type == EventType.INSTANCE_MOVE_STEP and event.body["step"] == CONFIRM_RESIZE


def fold_instance_event(ledger: UsageLedger, event: Event) -> UsageLedger:
    """The recomputation: fold instance.spawned / instance.deleted straight into a ledger (the
    spawned event carries the owner's project, inherited from the request), and a confirmed
    resize's new flavor."""
    ledger = _fold(ledger, event, (EventType.INSTANCE_SPAWNED, "launched_at"),
                   (EventType.INSTANCE_DELETED, "terminated_at"))
    if confirmed_resize(event):
        ledger.resized(event.aggregate_id, event.occurred_at, event.body["flavor"])
    return ledger
