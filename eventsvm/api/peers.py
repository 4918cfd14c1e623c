"""Read-your-writes across API processes: several workers serve one port, each with its own read
model following the log, so a client may write through one and read through another a
millisecond later (`openstack server create --wait` POSTs, then polls GET on a new connection).

A worker answers what its read model knows. Before it answers "no such thing" (404) or "who are
you?" (401) it catches up to the log's end as of that moment, bounded in time, and answers again:
a miss costs one end-offsets query, a hit nothing. With peers (`peers=True`: other API processes
write the same log), a write first catches up the same way, so what it refers to (a keypair, a
network, a server's state) is what the caller last saw from any worker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventsvm.events.model import Topic
from eventsvm.log.port import LogError
from eventsvm.projections.readmodel import ALL_TOPICS, ReadModel

log = logging.getLogger(__name__)

# answers that may only mean "not folded here yet"
MISSES = frozenset({401, 404})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# how long a request waits for its worker to catch up before it answers with what it knows
CATCH_UP_S = 5.0


def catch_up(readmodel: ReadModel, timeout_s: float = CATCH_UP_S,
             topics: Sequence[Topic] = ALL_TOPICS) -> bool:
    """Fold everything appended to `topics` so far, by any process; False when the log could not be
    asked or the tail did not get there in time (the caller then answers from what it has)."""
    try:
        if readmodel.sync(timeout_s, topics):
            return True
        log.warning("the read model did not reach the log's end within %g s", timeout_s)
    except LogError as exc:
        log.warning("could not ask the log for its end: %s", exc)
    return False


async def answer_caught_up(app: ASGIApp, scope: Scope, body: bytes | None, receive: Receive, send: Send,
                           readmodel: ReadModel, peers: bool = False, timeout_s: float = CATCH_UP_S) -> None:
    """Run `app` on a request whose whole `body` was read already (None: one whose handler reads
    it, and answers a 404 or 401 before it does), so that a 404 or 401 is answered
    only once the read model has caught up with the log (the request runs again after catching up).
    With `peers`, a write catches up before it runs, and its answer waits until what it appended is
    readable by the other workers (on Kafka the commit returns a moment before its records are).
    Running a write again after its 404 or 401 is safe: the handlers refuse before they append."""
    write = peers and scope.get("method") not in SAFE_METHODS
    if write:
        await run_in_threadpool(catch_up, readmodel, timeout_s)
    held = await _run_holding(app, scope, body, receive, send, readmodel, hold_all=write)
    if not held:
        return
    if held[0]["type"] == "http.response.start" and held[0]["status"] in MISSES \
            and await run_in_threadpool(catch_up, readmodel, timeout_s):
        held = await _run_holding(app, scope, body, receive, send, readmodel, hold_all=write, misses=False)
    for message in held:
        await send(message)


async def _run_holding(app: ASGIApp, scope: Scope, body: bytes | None, receive: Receive, send: Send,
                       readmodel: ReadModel, hold_all: bool, misses: bool = True) -> list[Message]:
    """Run `app`; what it answered and was held back: everything with `hold_all` (released once
    what it appended is readable everywhere), else a 404 or 401 when `misses` (nothing otherwise)."""
    held: list[Message] = []

    async def hold(message: Message) -> None:
        if hold_all or held or (misses and message["type"] == "http.response.start"
                                and message["status"] in MISSES):
            held.append(message)
        else:
            await send(message)

    await app(scope, receive if body is None else replayed(body, receive), hold)
    if hold_all:
        await run_in_threadpool(_settle, readmodel)
    return held


def _settle(readmodel: ReadModel) -> None:
    try:
        readmodel.log.settle()
    except LogError as exc:
        log.warning("could not confirm a write is readable by the other workers: %s", exc)


def replayed(body: bytes, receive: Receive) -> Receive:
    """A `receive` that delivers `body` whole, then whatever `receive` brings (a disconnect)."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
