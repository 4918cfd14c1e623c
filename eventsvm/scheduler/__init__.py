"""Nova-style scheduling policy: filters and weighers over host states and one request. Pure:
no I/O, no log, no events; the scheduler consumer feeds it states folded from the log."""

from eventsvm.scheduler.claims import Claim, claim_for, claim_for_flavor, claim_in, recorded_claim
from eventsvm.scheduler.filters import FILTERS, HostFilter
from eventsvm.scheduler.host_state import HostState
from eventsvm.scheduler.policy import DEFAULT_FILTERS, DEFAULT_WEIGHERS, SchedulerPolicy
from eventsvm.scheduler.request import SchedulingRequest
from eventsvm.scheduler.select import FilterStep, NoValidHost, Selection, select_destinations, weigh_hosts
from eventsvm.scheduler.weighers import WEIGHERS, HostWeigher

__all__ = [
    "DEFAULT_FILTERS",
    "DEFAULT_WEIGHERS",
    "FILTERS",
    "FilterStep",
    "WEIGHERS",
    "Claim",
    "HostFilter",
    "HostState",
    "HostWeigher",
    "NoValidHost",
    "SchedulerPolicy",
    "SchedulingRequest",
    "Selection",
    "claim_for",
    "claim_for_flavor",
    "claim_in",
    "recorded_claim",
    "select_destinations",
    "weigh_hosts",
]
