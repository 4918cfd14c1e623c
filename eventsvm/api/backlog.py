"""Backpressure at the door of POST /servers: a bound on the builds the cloud has accepted and not
finished (vm_state `building`: requested, not yet ACTIVE, ERROR or deleted), per project and in all.

Past the project's bound a create is refused with 429 and nova's overLimit body; past the bound in
all with 503 (the pipeline is behind, whoever asks). Both carry Retry-After, and neither appends
anything, so what was accepted before is never dropped: it is on the log and the services finish it.

The backlog is counted from the API's read model and kept current by a read-model listener (one
dict update per instance event, not a scan per create), plus the servers this process has admitted
and not yet folded, so concurrent creates in one process cannot all pass the same check. Another
API process on the same log sees this one's builds once its tail folds them: across processes the
bound is soft by the creates in flight at that moment (a door policy, not a rule decided on the log).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from eventsvm.api.errors import ServiceUnavailable, TooManyRequests
from eventsvm.events.model import Event
from eventsvm.projections.readmodel import ReadModel
from eventsvm.state.backlog import Backlog, BacklogLimits, refusal

# Seconds a refused client is told to wait: the pipeline finishes a build in a few seconds, so a
# retry after this finds room unless the burst goes on.
RETRY_AFTER_S = 5
# what the create's 503 means besides a log out of reach (the OpenAPI document says both)
BACKLOG_FULL = ("The event log is unavailable, or the cloud has more servers being built than it "
                "accepts at once; nothing was recorded. Retry later")


class BuildBacklog:
    """The unfinished builds by project, as the read model shows them plus those admitted here and
    not yet folded; `admit` is the check a create passes before it appends."""

    def __init__(self, limits: BacklogLimits | None = None) -> None:
        self.limits = limits or BacklogLimits()
        # instance id -> project (None until its request is folded) of every instance still building
        self._building: dict[str, str | None] = {}
        self._by_project: dict[str | None, int] = {}
        # servers admitted by this process whose append has not returned yet, by project
        self._admitted: dict[str, int] = {}
        self._admitted_in_all = 0
        self._attached: ReadModel | None = None
        self._attaching = threading.Lock()

    def _attach(self, readmodel: ReadModel) -> None:
        """Count what the read model holds, then follow it; once, on the first create."""
        with self._attaching:
            if self._attached is readmodel:
                return
            assert self._attached is None, "one BuildBacklog follows one read model"
            with readmodel.lock:
                for inst in readmodel.models.instances.instances.values():
                    self._track(inst.id, inst.project_id, inst.vm_state == "building")
                readmodel.listeners.append(self._observe)
                self._attached = readmodel

    def _observe(self, event: Event, topic: str) -> None:
        # called by the read model under its lock after each fold
        if not event.type.startswith("instance."):
            return
        assert self._attached is not None
        inst = self._attached.models.instances.get(event.aggregate_id)
        if inst is not None:
            self._track(inst.id, inst.project_id, inst.vm_state == "building")

    def _track(self, instance_id: str, project_id: str | None, building: bool) -> None:
        known = instance_id in self._building
        if building and known and self._building[instance_id] == project_id:
            return
        if known:
            was = self._building.pop(instance_id)
            self._by_project[was] -= 1
            if not self._by_project[was]:
                del self._by_project[was]
        if building:
            self._building[instance_id] = project_id
            self._by_project[project_id] = self._by_project.get(project_id, 0) + 1

    def backlog(self, project_id: str) -> Backlog:
        """The project's and the cloud's unfinished builds, admitted ones included; under the read
        model's lock."""
        return Backlog(
            project=self._by_project.get(project_id, 0) + self._admitted.get(project_id, 0),
            in_all=len(self._building) + self._admitted_in_all,
        )

    @contextmanager
    def admit(self, readmodel: ReadModel, project_id: str, servers: int) -> Iterator[None]:
        """Hold room for `servers` builds of the project while the block appends them, or raise
        TooManyRequests (429) / ServiceUnavailable (503) with Retry-After when they do not fit."""
        self._attach(readmodel)
        with readmodel.lock:
            status = refusal(self.backlog(project_id), servers, self.limits)
            if status is None:
                self._admitted[project_id] = self._admitted.get(project_id, 0) + servers
                self._admitted_in_all += servers
        retry = {"Retry-After": str(RETRY_AFTER_S)}
        if status == 429:
            raise TooManyRequests(
                f"The most servers this project may have being built at once is {self.limits.per_project}; "
                f"try again once some are ACTIVE.", headers=retry)
        if status == 503:
            raise ServiceUnavailable(
                "The cloud has more servers being built than it accepts at once; try again later.",
                headers=retry)
        try:
            yield
        finally:
            # the appended builds are counted by the listener from here on (folded at append)
            with readmodel.lock:
                self._admitted[project_id] -= servers
                if not self._admitted[project_id]:
                    del self._admitted[project_id]
                self._admitted_in_all -= servers
