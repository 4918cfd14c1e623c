"""An open-loop load generator for POST /servers: `python -m bench.loadgen` (issue 15 items 1-2).

Open loop means the n-th request is sent at start + n / rate whatever happened to the ones before
it, so a system that falls behind shows it as queueing (growing latency) instead of quietly
slowing the clients down, as closed-loop clients would. It runs in its own process so that what it
costs is measured apart from the cloud: it reports its own CPU seconds, and a lean client keeps
that small (asyncio, one coroutine per request, raw HTTP/1.1 on keep-alive connections, each
request's bytes built by string formatting; no HTTP library, whose per-request cost was the
largest part of the generator's time at these rates).

Input: one JSON object on stdin {url, token, body, rate, count, connections}; `body` is the
server object, whose "name" gets "-<n>" appended. With "method": "DELETE" and "ids" (server ids)
instead of body and count, it sends DELETE /servers/<id> for each id in turn, at the same rate.
Output: one JSON object on stdout with, per request, its send time (epoch ms), its latency (ms), its
status and the server id it was given (for a delete, the id it deleted).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sent:
    """One request as the generator saw it."""

    number: int
    sent_ms: float
    latency_ms: float = 0.0
    status: int = 0
    server_id: str = ""


# a kept-alive connection idle longer than this is closed, not reused: below uvicorn's 5 s
IDLE_LIMIT_S = 3.0


@dataclass
class Pool:
    """Keep-alive connections to the API; a request takes an idle one or opens a new one, up to
    `limit` (then it waits: past that the generator would only be measuring itself)."""

    host: str
    port: int
    limit: int
    # (reader, writer, when it was given back)
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = field(default_factory=list)
    opened: int = 0
    freed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with self.freed:
            while not self.idle and self.opened >= self.limit:
                await self.freed.wait()
            while self.idle:
                reader, writer, since = self.idle.pop()
                if time.monotonic() - since < IDLE_LIMIT_S:
                    return reader, writer
                # the server may be closing it (uvicorn's keep-alive is 5 s): a request sent on it
                # then reads nothing back, and a POST cannot be sent again
                writer.close()
                self.opened -= 1
            self.opened += 1
        return await asyncio.open_connection(self.host, self.port)

    async def give(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
        async with self.freed:
            if conn is None:
                self.opened -= 1
            else:
                self.idle.append((*conn, time.monotonic()))
            self.freed.notify()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: bytes) -> tuple[int, bytes, bool]:
    """Send one request; the status, the body and whether the connection may be reused."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields = (line.partition(":") for line in lines[1:] if line)
    headers = {name.strip().lower(): value.strip() for name, _, value in fields}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, body, headers.get("connection", "").lower() != "close"


def _create(pool: Pool, target: str, token: str, body: dict[str, Any], number: int) -> bytes:
    """POST /servers of the `number`-th server."""
    payload = json.dumps({"server": {**body, "name": f"{body.get('name', 'load')}-{number}"}}).encode()
    return (f"POST {target} HTTP/1.1\r\nHost: {pool.host}:{pool.port}\r\nX-Auth-Token: {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode() + payload


def _delete(pool: Pool, target: str, token: str, server_id: str) -> bytes:
    """DELETE /servers/<server_id>."""
    return (f"DELETE {target}/{server_id} HTTP/1.1\r\nHost: {pool.host}:{pool.port}\r\n"
            f"X-Auth-Token: {token}\r\nContent-Length: 0\r\n\r\n").encode()


async def _one(pool: Pool, request: bytes, sent: Sent) -> None:
    conn = await pool.take()
    started = time.perf_counter()
    try:
        status, answer, reusable = await _exchange(*conn, request)
    except (OSError, asyncio.IncompleteReadError) as exc:
        conn[1].close()
        await pool.give(None)
        sent.status = -1
        sent.server_id = f"{type(exc).__name__}: {exc}"
        return
    sent.latency_ms = (time.perf_counter() - started) * 1000
    sent.status = status
    if status == 202:
        sent.server_id = str(json.loads(answer)["server"]["id"])
    if reusable:
        await pool.give(conn)
    else:
        conn[1].close()
        await pool.give(None)


async def generate(url: str, token: str, body: dict[str, Any], rate: float, count: int,
                   connections: int, delete_ids: list[str] | None = None) -> list[Sent]:
    """Send `count` creates at `rate` per second, on schedule, or with `delete_ids` a delete of each
    of them instead; every request's outcome."""
    parsed = urllib.parse.urlsplit(url)
    pool = Pool(parsed.hostname or "127.0.0.1", parsed.port or 80, connections)
    target = f"{parsed.path.rstrip('/')}/servers"
    loop = asyncio.get_running_loop()
    start = loop.time()
    wall_start = time.time() * 1000
    tasks: list[asyncio.Task[None]] = []
    records: list[Sent] = []
    if delete_ids is not None:
        count = len(delete_ids)
    for n in range(count):
        due = start + n / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        # the send time is the schedule's, not the moment a busy loop got to it: the schedule is
        # what a user arriving then would have experienced
        sent = Sent(n, wall_start + (due - start) * 1000)
        if delete_ids is None:
            request = _create(pool, target, token, body, n)
        else:
            sent.server_id = delete_ids[n]
            request = _delete(pool, target, token, delete_ids[n])
        records.append(sent)
        tasks.append(asyncio.create_task(_one(pool, request, sent)))
    await asyncio.gather(*tasks)
    for _, writer, _ in pool.idle:
        writer.close()
    return records


def main() -> int:
    spec = json.load(sys.stdin)
    deleting = spec.get("method", "POST") == "DELETE"
    records = asyncio.run(generate(spec["url"], spec["token"], spec.get("body", {}), float(spec["rate"]),
                                   int(spec.get("count", 0)), int(spec.get("connections", 256)),
                                   [str(i) for i in spec["ids"]] if deleting else None))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    json.dump({"cpu_s": usage.ru_utime + usage.ru_stime,
               "sent": [[r.number, r.sent_ms, r.latency_ms, r.status, r.server_id] for r in records]},
              sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
