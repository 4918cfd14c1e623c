"""select_destinations' exact answer, found by visiting hosts best first instead of all of them.

nova weighs a host by normalising each weigher across the hosts that pass every filter and summing
multiplier x normalised weight; the best host and its alternates are the top k = 1 + num_alternates
by (total, then name). Every term is monotone in its weigher's figure (float subtraction, division
by a positive span, multiplication and addition all are), so this is Fagin's threshold algorithm:

1. Per weigher, the lowest and highest figure among passing hosts: walk the host index from each
   end until a host passes every filter. That gives each weigher's normalisation exactly.
2. Walk every weigher's order at once, best first (ties in name order), scoring each newly seen
   passing host with the same float operations select_destinations uses. The hosts not seen yet
   score at most the threshold: the total of the figures at the walks' fronts. Stop when the
   k-th best seen scores above it, or equals it while no unseen host can tie and sort before it
   by name.
3. Weighers that weigh nothing here (multiplier 0, or one figure for every passing host) add
   exactly 0.0 to every total, so they are left out; with none left the order is the names'.

What it cannot shortcut it hands to select_destinations whole: a weigher that reads the request
or overrides HostKeyWeigher.raw_weight, and any decision where no host passes (so NoValidHost's
explanation, filter by filter, is the reference's own). An affinity group's hosts or a requested
zone narrow the walk first, since no host outside them can pass.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence

from eventsvm.scheduler.filters import AvailabilityZoneFilter, HostFilter, ServerGroupAffinityFilter
from eventsvm.scheduler.host_index import HostIndex, HostOrder, host_key_value
from eventsvm.scheduler.host_state import HostState
from eventsvm.scheduler.policy import SchedulerPolicy
from eventsvm.scheduler.request import SchedulingRequest
from eventsvm.scheduler.select import NoValidHost, Selection, filters_for, select_destinations
from eventsvm.scheduler.weighers import HostKeyWeigher

# (figure, multiplier) of each weigher, in the policy's order
Terms = list[tuple[str, float]]
# (figure, multiplier, lowest, span) of each weigher that separates the passing hosts
Scale = list[tuple[str, float, float, float]]


class _NothingPasses(Exception):
    """No host passes every filter: select_destinations explains it."""


def select_ranked(
    hosts: Mapping[str, HostState],
    index: HostIndex,
    request: SchedulingRequest,
    policy: SchedulerPolicy | None = None,
) -> Selection:
    """What select_destinations(hosts.values(), request, policy) answers, visiting few hosts.

    `index` must hold exactly `hosts` as they are (SchedulerState keeps the two together).
    """
    policy = policy if policy is not None else SchedulerPolicy()
    terms = _indexed_terms(policy, index)
    if terms is None or not hosts:
        return select_destinations(hosts.values(), request, policy)
    host_filters = filters_for(request, policy)
    order: HostOrder | None = index.every
    if request.server_group_policy == "affinity" and request.group_hosts and _runs(
        host_filters, ServerGroupAffinityFilter
    ):
        return _among([hosts[n] for n in sorted(request.group_hosts) if n in hosts], hosts, request, policy)
    if request.availability_zone is not None and _runs(host_filters, AvailabilityZoneFilter):
        order = index.zones.get(request.availability_zone)
    try:
        if order is None:
            raise _NothingPasses
        return _best_first(hosts, order, request, host_filters, terms)
    except _NothingPasses:
        return select_destinations(hosts.values(), request, policy)


def _indexed_terms(policy: SchedulerPolicy, index: HostIndex) -> Terms | None:
    """The policy's weighers as indexed figures, or None when one of them is not one."""
    terms = []
    for weigher, multiplier in policy.host_weighers():
        if not isinstance(weigher, HostKeyWeigher):
            return None
        overridden = type(weigher).raw_weight is not HostKeyWeigher.raw_weight
        if overridden or weigher.host_key not in index.every.by_key:
            return None
        terms.append((weigher.host_key, multiplier))
    return terms


def _runs(host_filters: Sequence[HostFilter], kind: type[HostFilter]) -> bool:
    # exactly the built-in class: a subclass may pass hosts the narrowing would leave out
    return any(type(f) is kind for f in host_filters)


def _among(
    subset: list[HostState],
    hosts: Mapping[str, HostState],
    request: SchedulingRequest,
    policy: SchedulerPolicy,
) -> Selection:
    """The selection among `subset`, a superset of the passing hosts; the full run explains a refusal."""
    try:
        return select_destinations(subset, request, policy)
    except NoValidHost:
        return select_destinations(hosts.values(), request, policy)


def _best_first(
    hosts: Mapping[str, HostState],
    order: HostOrder,
    request: SchedulingRequest,
    host_filters: Sequence[HostFilter],
    terms: Terms,
) -> Selection:
    verdicts: dict[str, bool] = {}

    def passes(name: str) -> bool:
        verdict = verdicts.get(name)
        if verdict is None:
            host = hosts[name]
            verdict = verdicts[name] = all(f.host_passes(host, request) for f in host_filters)
        return verdict

    wanted = 1 + request.num_alternates
    scale = _scale(order, terms, passes)
    if not scale:
        # every total is 0.0: the order is the names'
        chosen = [name for name in _first_passing(order.names, passes, wanted)]
        if not chosen:
            raise _NothingPasses
        return Selection(host=chosen[0], alternates=chosen[1:])
    ranked = _top(hosts, order, scale, passes, wanted)
    return Selection(host=ranked[0], alternates=ranked[1:])


def _first_passing(names: list[str], passes: Callable[[str], bool], wanted: int) -> list[str]:
    chosen: list[str] = []
    for name in names:
        if passes(name):
            chosen.append(name)
            if len(chosen) == wanted:
                break
    return chosen


def _scale(order: HostOrder, terms: Terms, passes: Callable[[str], bool]) -> Scale:
    """Each weigher's lowest figure and span over the passing hosts, as normalize computes them;
    weighers adding 0.0 to every total (multiplier 0, span 0) are left out."""
    scale = []
    for key, multiplier in terms:
        if multiplier == 0:
            continue
        entries = order.by_key[key]
        high = next((value for value, name in reversed(entries) if passes(name)), None)
        if high is None:
            raise _NothingPasses
        low = next(value for value, name in entries if passes(name))
        if high - low != 0:
            scale.append((key, multiplier, low, high - low))
    return scale


def _total(scale: Scale, figures: Sequence[float]) -> float:
    # the very operations of select_destinations' normalize and weigh_hosts, in the same order
    total = 0.0
    for (_, multiplier, low, span), figure in zip(scale, figures, strict=True):
        total += multiplier * ((figure - low) / span)
    return total


class _Walk:
    """One figure's hosts from best to worst (highest first for a positive multiplier), equal
    figures in name order; `front` is the first entry not visited yet."""

    def __init__(self, entries: list[tuple[float, str]], highest_first: bool) -> None:
        self.entries, self.highest_first = entries, highest_first
        self.pos = 0
        if highest_first:
            self.block_end = len(entries)
            self._enter_block()

    def _enter_block(self) -> None:
        # the run of entries with the figure just below block_end, visited in name order
        end = self.block_end
        self.block_start = bisect_left(self.entries, (self.entries[end - 1][0],), 0, end) if end else 0
        self.pos = self.block_start

    @property
    def front(self) -> tuple[float, str] | None:
        """The next entry to visit; None once every entry was visited."""
        if self.highest_first:
            return self.entries[self.pos] if self.pos < self.block_end else None
        return self.entries[self.pos] if self.pos < len(self.entries) else None

    def step(self) -> None:
        """Move past the front entry."""
        self.pos += 1
        if self.highest_first and self.pos == self.block_end:
            self.block_end = self.block_start
            self._enter_block()

    def next_worse(self) -> float | None:
        """The best figure strictly worse than the front's, None when there is none."""
        front = self.front
        if front is None:
            return None
        if self.highest_first:
            return self.entries[self.block_start - 1][0] if self.block_start else None
        after = bisect_left(self.entries, (math.nextafter(front[0], math.inf),), self.pos)
        return self.entries[after][0] if after < len(self.entries) else None


def _top(
    hosts: Mapping[str, HostState],
    order: HostOrder,
    scale: Scale,
    passes: Callable[[str], bool],
    wanted: int,
) -> list[str]:
    """The `wanted` best passing hosts by (total desc, name) of the threshold algorithm."""
    walks = [_Walk(order.by_key[key], multiplier > 0) for key, multiplier, _, _ in scale]
    seen: set[str] = set()
    found: list[tuple[float, str]] = []  # (-total, name) of the passing hosts seen
    while True:
        for walk in walks:
            front = walk.front
            assert front is not None  # every walk holds every host; one ends only when all are seen
            walk.step()
            name = front[1]
            if name in seen:
                continue
            seen.add(name)
            if passes(name):
                host = hosts[name]
                found.append((-_total(scale, [host_key_value(host, key) for key, _, _, _ in scale]), name))
        fronts = _fronts(walks)
        if fronts is None:
            break  # a walk visited every host: all are seen
        if len(found) >= wanted and _settled(scale, walks, fronts, sorted(found)[wanted - 1]):
            break
    found.sort()
    return [name for _, name in found[:wanted]]


def _fronts(walks: list[_Walk]) -> list[tuple[float, str]] | None:
    fronts = []
    for walk in walks:
        front = walk.front
        if front is None:
            return None
        fronts.append(front)
    return fronts


def _settled(
    scale: Scale, walks: list[_Walk], fronts: list[tuple[float, str]], kth: tuple[float, str]
) -> bool:
    """Whether no host behind the walks' fronts can rank before `kth`, the k-th best seen."""
    figures = [figure for figure, _ in fronts]
    threshold = _total(scale, figures)
    kth_total = -kth[0]
    if kth_total > threshold:
        return True
    if kth_total < threshold:
        return False
    # A tie at the threshold: an unseen host with every front figure comes after each walk's
    # front in name order, so after the latest front name; one with a worse figure in some walk
    # scores at most the threshold with that figure lowered to the next one there.
    if max(name for _, name in fronts) <= kth[1]:
        return False
    for i, walk in enumerate(walks):
        worse = walk.next_worse()
        if worse is not None and _total(scale, [*figures[:i], worse, *figures[i + 1 :]]) >= kth_total:
            return False
    return True
