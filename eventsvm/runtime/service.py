"""What a service is: a decider over plain data, described once and run by eventsvm.runner.

A service names the topics it is fed (`inputs`, consumed as a group member, offsets committed
with its outputs) and the topics whose events make up its state (`state_topics`, read in full by
every process of the service, so that each sees the others' decisions). `evolve` folds one event
into the state; `decide` answers one input event with the events to append. Every output topic is
a state topic too: the runner folds each output as it is decided, and a rebuild must fold it again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from eventsvm.events.model import Event, Topic

S = TypeVar("S")


class Rejected(Exception):
    """An input that makes no sense (impossible value, unknown instance): it goes to the
    dead-letter topic with this message and the service carries on."""


class Transient(Exception):
    """A collaborator is out of reach for now (the hypervisor, say): the step is abandoned,
    nothing of it is committed, and the same input is decided again after a pause."""


@dataclass(slots=True)
class Output:
    """One event to append. `route` is a compute host's slot for host-routed topics: the event
    lands in partition `route % partitions`, which that host's spawner reads."""

    event: Event
    route: int | None = None


@dataclass(slots=True)
class StepContext:
    """Where the input came from, and the service's collaborators (hypervisor, clock, ...)."""

    topic: str
    partition: int
    partitions: int
    deps: Any = None


# Answer one input event with the events to append (pure but for `ctx.deps`).
Decide = Callable[[S, Event, StepContext], Sequence[Output]]
# Fold one event into the state and return it.
Evolve = Callable[[S, Event], S]
# A fresh, empty state.
InitialState = Callable[[], S]
# Drop from the state what no input can need any more; called only with every state topic folded
# to its end, so no record read late across topics can need what it drops.
Settle = Callable[[S], S]


@dataclass(frozen=True)
class Service(Generic[S]):
    """A service's whole description: its name, topics, and its three functions."""

    name: str
    inputs: tuple[Topic, ...]
    state_topics: tuple[Topic, ...]
    outputs: tuple[Topic, ...]
    initial_state: InitialState[S]
    evolve: Evolve[S]
    decide: Decide[S]
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    settle: Settle[S] | None = None
    # state topics whose fold gives the same decisions with a replayed copy of a record as without
    # it: this service's fold keeps no id per record there to dead-letter copies by (a copy is
    # still found by `audit verify`); every other state-only topic keeps one for good
    replay_tolerant: tuple[Topic, ...] = ()

    def __post_init__(self) -> None:
        # The runner folds each output into the state the moment it is decided; a rebuild folds
        # only the state topics. An output topic missing from them would make the two differ.
        unfolded = [str(t) for t in self.outputs if t not in self.state_topics]
        if unfolded:
            raise ValueError(
                f"service {self.name}: decide emits onto {', '.join(unfolded)}, which the runner folds as it "
                f"decides; list it in state_topics so a rebuild or a replay folds it too"
            )
