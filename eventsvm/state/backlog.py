"""The bound on unfinished builds (servers requested and not yet ACTIVE, ERROR or deleted) and the
decision a create meets at the API's door: pure, so it is tested with numbers and nothing else.
The API counts the backlog and turns a refusal into an answer (eventsvm/api/backlog.py)."""

from __future__ import annotations

from dataclasses import dataclass

# -1: no bound, as nova writes an unlimited quota
UNBOUNDED = -1
# Defaults: a project may have 200 builds in flight, the cloud 1000; about a minute of the
# pipeline's work on the test driver, and far above nova's default instances quota (10), so only a
# burst meets them. An operator raises them with --build-backlog-per-project / --build-backlog.
DEFAULT_PER_PROJECT = 200
DEFAULT_IN_ALL = 1000


@dataclass(frozen=True)
class BacklogLimits:
    """The most unfinished builds one project, and the whole cloud, may have (UNBOUNDED: none)."""

    per_project: int = DEFAULT_PER_PROJECT
    in_all: int = DEFAULT_IN_ALL


@dataclass(frozen=True)
class Backlog:
    """Unfinished builds: the caller's project's and the cloud's."""

    project: int
    in_all: int


def refusal(backlog: Backlog, servers: int, limits: BacklogLimits) -> int | None:
    """The status refusing `servers` more builds on top of `backlog`: 429 past the project's bound,
    503 past the bound in all; None when they fit. The project's bound is checked first: a project
    over its own share is told so, whatever the rest of the cloud is doing."""
    if limits.per_project != UNBOUNDED and backlog.project + servers > limits.per_project:
        return 429
    if limits.in_all != UNBOUNDED and backlog.in_all + servers > limits.in_all:
        return 503
    return None
