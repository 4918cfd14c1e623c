"""select_destinations' exact answer, found by visiting hosts best first instead of all of them.

nova weighs a host by normalising each weigher across the hosts that pass every filter and summing
multiplier x normalised weight; the best host and its alternates are the top k = 1 + num_alternates
by (total, then name). Hosts of equal figures (a class, see host_index) weigh the same, so the
search runs over classes, and every term is monotone in its weigher's figure (float subtraction,
division by a positive span, multiplication and addition all are), so this is Fagin's threshold
algorithm:

1. Per weigher, the lowest and highest figure among passing hosts: walk its order of classes from
   each end until a class has a host that passes every filter. That is each weigher's
   normalisation, exactly.
2. Walk every weigher's order at once, best first, scoring each newly met class with the same
   float operations select_destinations uses and keeping its first k passing hosts by name. A
   class not met yet scores at most the threshold, the total of the figures at the walks' fronts;
   once the k-th best host met scores above it, no other host can take its place.
3. Weighers that weigh nothing here (multiplier 0, or one figure for every passing host) add
   exactly 0.0 to every total, so they are left out; with none left the order is the names'.

What it cannot shortcut it hands to select_destinations whole: a weigher that reads the request
or overrides HostKeyWeigher.raw_weight (unless it says it weighs every host alike for this
request, HostWeigher.weighs_all_alike), and any decision where no host passes (so NoValidHost's
explanation, filter by filter, is the reference's own). An affinity group's hosts or a requested
zone narrow the walk first, since no host outside them can pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from eventsvm.scheduler.filters import AvailabilityZoneFilter, HostFilter, ServerGroupAffinityFilter
from eventsvm.scheduler.host_index import INDEXED_KEYS, Figures, HostIndex, HostOrder
from eventsvm.scheduler.host_state import HostState
from eventsvm.scheduler.policy import SchedulerPolicy
from eventsvm.scheduler.request import SchedulingRequest
from eventsvm.scheduler.select import NoValidHost, Selection, filters_for, select_destinations
from eventsvm.scheduler.weighers import HostKeyWeigher

# (figure, multiplier) of each weigher, in the policy's order
Terms = list[tuple[str, float]]
# (position in the class figures, multiplier, lowest, span) of each weigher that separates the
# passing hosts
Scale = list[tuple[int, float, float, float]]


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
    terms = _indexed_terms(policy, index, request)
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


def _indexed_terms(policy: SchedulerPolicy, index: HostIndex, request: SchedulingRequest) -> Terms | None:
    """The policy's weighers as indexed figures, or None when one of them is not one; a weigher
    that weighs every host alike for this request adds 0.0 to every total and is left out."""
    terms = []
    for weigher, multiplier in policy.host_weighers():
        if weigher.weighs_all_alike(request):
            continue
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
    wanted = 1 + request.num_alternates
    # per class met: its passing hosts found so far, and how far through its members the search got;
    # each host is in one class, so each is put through the filters at most once
    progress: dict[Figures, tuple[list[str], int]] = {}

    def chosen(figures: Figures, count: int = wanted) -> list[str]:
        # the class's first `count` passing hosts; its first `wanted` are all of it that can rank
        found, at = progress.get(figures) or ([], 0)
        members = order.classes[figures]
        while len(found) < count and at < len(members):
            if _passes(hosts[members[at]], request, host_filters):
                found.append(members[at])
            at += 1
        progress[figures] = (found, at)
        return found

    scale = _scale(order, terms, chosen)
    if not scale:
        # every total is 0.0: the order is the names'
        ranked = []
        for name in order.names:
            if _passes(hosts[name], request, host_filters):
                ranked.append(name)
                if len(ranked) == wanted:
                    break
        if not ranked:
            raise _NothingPasses
    else:
        ranked = _top(order, scale, chosen, wanted)
    return Selection(host=ranked[0], alternates=ranked[1:])


def _passes(host: HostState, request: SchedulingRequest, host_filters: Sequence[HostFilter]) -> bool:
    for host_filter in host_filters:
        if not host_filter.host_passes(host, request):
            return False
    return True


def _scale(order: HostOrder, terms: Terms, chosen: Callable[[Figures, int], list[str]]) -> Scale:
    """Each weigher's lowest figure and span over the passing hosts, as normalize computes them;
    weighers adding 0.0 to every total (multiplier 0, span 0) are left out."""
    scale = []
    for key, multiplier in terms:
        if multiplier == 0:
            continue
        entries = order.by_key[key]
        high = next((figure for figure, figures in reversed(entries) if chosen(figures, 1)), None)
        if high is None:
            raise _NothingPasses
        low = next(figure for figure, figures in entries if chosen(figures, 1))
        if high - low != 0:
            scale.append((INDEXED_KEYS.index(key), multiplier, low, high - low))
    return scale


def _total(scale: Scale, figures: Sequence[float]) -> float:
    # the very operations of select_destinations' normalize and weigh_hosts, in the same order
    total = 0.0
    for at, multiplier, low, span in scale:
        total += multiplier * ((figures[at] - low) / span)
    return total


def _top(order: HostOrder, scale: Scale, chosen: Callable[[Figures], list[str]], wanted: int) -> list[str]:
    """The `wanted` best passing hosts by (total desc, name), by the threshold algorithm."""
    # each weigher's classes best first: from the highest figure for a positive multiplier
    walks = [(order.by_key[INDEXED_KEYS[at]], multiplier > 0) for at, multiplier, _, _ in scale]
    classes = len(order.classes)
    met: set[Figures] = set()
    best: list[tuple[float, str]] = []  # (-total, name): the top `wanted` of the classes met
    for depth in range(classes):
        front = []
        for entries, highest_first in walks:
            figure, figures = entries[classes - 1 - depth if highest_first else depth]
            front.append(figure)
            if figures in met:
                continue
            met.add(figures)
            total = _total(scale, figures)
            best = sorted([*best, *((-total, name) for name in chosen(figures))])[:wanted]
        # every class has an entry at each depth of each walk, so all are met by the last depth
        if len(best) == wanted and -best[-1][0] > _threshold(scale, front):
            break
    return [name for _, name in best]


def _threshold(scale: Scale, front: list[float]) -> float:
    """The most a class behind the walks' fronts can total: the total of the front figures."""
    figures = [0.0] * len(INDEXED_KEYS)
    for (at, _, _, _), figure in zip(scale, front, strict=True):
        figures[at] = figure
    return _total(scale, figures)
