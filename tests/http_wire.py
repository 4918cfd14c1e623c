"""HTTP at the socket: uvicorn served from a thread, and raw bytes sent to a server and its whole
answer read back (for what an HTTP client library would not send, or would not show)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn


@contextmanager
def served(config: uvicorn.Config, start_timeout: float = 20.0) -> Iterator[uvicorn.Server]:
    """`config`'s server running on a daemon thread until the block ends."""
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def send_and_read(address: tuple[str, int], data: bytes, timeout: float = 30) -> bytes:
    """Send `data` in one write and read until the server closes the connection; what it sent.
    A server that refuses part way may reset the connection: what arrived before counts."""
    answer = b""
    with socket.create_connection(address, timeout=timeout) as conn:
        try:
            conn.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it was all sent
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer
