"""A burst of POST /servers from many client threads at once, as the backpressure test and the
burst benchmark send it: every answer kept (status, Retry-After, body)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Answer:
    """What one create was answered."""

    status: int
    retry_after: str | None
    body: dict[str, Any]

    @property
    def server_id(self) -> str:
        """The accepted server's id (a 202 only)."""
        return str(self.body["server"]["id"])


def burst(servers_url: str, token: str, server: Callable[[int], dict[str, Any]], count: int,
          clients: int, timeout_s: float = 120.0) -> list[Answer]:
    """POST `count` creates to `servers_url` from `clients` threads; the n-th body is `server(n)`."""
    answers: list[Answer] = []
    guard = threading.Lock()
    numbers = iter(range(count))

    def client() -> None:
        with httpx.Client(headers={"X-Auth-Token": token}, timeout=timeout_s) as http:
            while True:
                with guard:
                    n = next(numbers, None)
                if n is None:
                    return
                reply = http.post(servers_url, json={"server": server(n)})
                answer = Answer(reply.status_code, reply.headers.get("Retry-After"), reply.json())
                with guard:
                    answers.append(answer)

    with ThreadPoolExecutor(clients) as pool:
        for done in [pool.submit(client) for _ in range(clients)]:
            done.result()
    return answers
