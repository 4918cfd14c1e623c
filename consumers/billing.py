"""billing: the usage ledger. Each instance.spawned opens one usage record, each instance.deleted
closes one, each confirmed resize records the flavor billed from then on, on eventsvm.billing.usage.

Exactly once: the records are appended in the same atomic step that commits the input offsets, and
the ledger (this service's state, folded from its own topic) remembers which instances are already
opened or closed, so a redelivered or duplicated input never writes a second record. Spawned and
deleted live on two topics and may be read in either order; each record stands on its own. A
usage opened and closed is forgotten an hour of log time later (BillingLedger; the services'
horizon): the state holds what billing may still be asked about, not every instance it billed.
"""

from __future__ import annotations

from collections.abc import Sequence

from eventsvm.events.model import Event, EventType, Topic, new_event
from eventsvm.runtime.service import Output, Service, StepContext
from eventsvm.state.usage import (
    BillingLedger,
    UsageLedger,
    billed_flavor,
    confirmed_resize,
    evolve_billing,
    settle_billing,
)


def decide(state: UsageLedger, event: Event, ctx: StepContext) -> Sequence[Output]:
    """Open the usage of a spawned instance, close that of a deleted one; once each."""
    body, instance_id = event.body, event.aggregate_id
    if event.type == EventType.INSTANCE_SPAWNED and not state.is_open(instance_id):
        opened = {"host": body["host"], "started_at": body["launched_at"],
                  "flavor": billed_flavor(body["flavor"])}
        return [Output(new_event(EventType.USAGE_OPENED, instance_id, opened, cause=event))]
    if event.type == EventType.INSTANCE_DELETED and not state.is_closed(instance_id):
        closed = {"host": body.get("host"), "ended_at": body["terminated_at"]}
        return [Output(new_event(EventType.USAGE_CLOSED, instance_id, closed, cause=event))]
    if confirmed_resize(event) and not state.is_resized(instance_id, event.occurred_at):
        resized = {"host": body["dest_host"], "at": event.occurred_at,
                   "flavor": billed_flavor(body["flavor"])}
        return [Output(new_event(EventType.USAGE_RESIZED, instance_id, resized, cause=event))]
    return []


SERVICE: Service[BillingLedger] = Service(
    name="billing",
    inputs=(Topic.SPAWNED, Topic.DELETED, Topic.ACTION_REQUESTED),
    state_topics=(Topic.BILLING,),
    outputs=(Topic.BILLING,),
    initial_state=BillingLedger,
    evolve=evolve_billing,
    decide=decide,
    settle=settle_billing,
    # a copy of a billing record refolded sets what its original set (a resize's time is checked
    # by time), and one of a forgotten usage's records brings back an opened or closed usage that
    # only keeps billing from writing for that instance: no decision changes, so the fold need not
    # keep every record's id (~300 B each, for good) to letter copies; `audit verify` finds them
    replay_tolerant=(Topic.BILLING,),
    description="usage ledger: vCPU-, RAM- and disk-hours per instance and flavor, from spawned to deleted",
)
