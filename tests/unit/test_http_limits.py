"""The head bound of the HTTP server (eventsvm.app.http_limits) on a real uvicorn socket: each of
several requests pipelined on one connection is judged from its own first byte, so a second
request's over-long request line is 414 and its over-long headers 431, after the first's answer."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import uvicorn

from eventsvm.app.http_limits import MAX_HEAD_BYTES, BoundedHeadProtocol
from tests.http_wire import send_and_read, served


async def _echo(scope: dict[str, object], receive: object, send: object) -> None:
    """Answers 200 with the request's path and the length of its body."""
    body = b""
    while True:
        message = await receive()  # type: ignore[operator]
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    text = f"{scope['path']} {len(body)}".encode()
    await send({"type": "http.response.start", "status": 200,  # type: ignore[operator]
                "headers": [(b"content-length", str(len(text)).encode())]})
    await send({"type": "http.response.body", "body": text})  # type: ignore[operator]


@pytest.fixture(scope="module")
def address() -> Iterator[tuple[str, int]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = uvicorn.Config(_echo, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                            access_log=False, http=BoundedHeadProtocol)
    with served(config):
        yield "127.0.0.1", port


def _exchange(address: tuple[str, int], requests: bytes) -> list[bytes]:
    """Send `requests` in one write and read every answer until the server closes (after a
    refusal, or the request saying `Connection: close`); the answers' status lines and bodies."""
    return _split(send_and_read(address, requests, timeout=10))


def _split(stream: bytes) -> list[bytes]:
    answers = []
    while stream:
        head, _, rest = stream.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        status = head.split(b"\r\n")[0]
        answers.append(status + b" " + rest[:length])
        stream = rest[length:]
    return answers


FINE = b"GET /first HTTP/1.1\r\nHost: here\r\n\r\n"
LONG_LINE = (b"GET /compute/v2.1/servers?name=" + b"a" * (MAX_HEAD_BYTES + 10)
             + b" HTTP/1.1\r\nHost: here\r\n\r\n")
# one header, its value without a line end past the bound: the request line was read, 431
LONG_HEADER = (b"GET /compute/v2.1/servers HTTP/1.1\r\nHost: here\r\nX-Padding: " + b"a" * MAX_HEAD_BYTES
               + b"\r\n\r\n")
URI_TOO_LONG = (b'HTTP/1.1 414 Request-URI Too Long {"computeFault": {"code": 414, "message": '
                b'"The request URI is longer than 65536 bytes."}}')
HEADERS_TOO_LARGE = (b'HTTP/1.1 431 Request Header Fields Too Large {"computeFault": {"code": 431, '
                     b'"message": "Request header fields are larger than 65536 bytes."}}')


def test_a_pipelined_second_request_line_past_the_bound_is_414_after_the_first_answer(
        address: tuple[str, int]) -> None:
    assert _exchange(address, FINE + LONG_LINE) == [b"HTTP/1.1 200 OK /first 0", URI_TOO_LONG]
    assert _exchange(address, LONG_LINE) == [URI_TOO_LONG]


def test_a_pipelined_second_head_past_the_bound_is_431_after_the_first_answer(
        address: tuple[str, int]) -> None:
    assert _exchange(address, FINE + LONG_HEADER) == [b"HTTP/1.1 200 OK /first 0", HEADERS_TOO_LARGE]
    assert _exchange(address, LONG_HEADER) == [HEADERS_TOO_LARGE]


def test_a_body_before_the_second_request_is_not_counted_as_its_head(address: tuple[str, int]) -> None:
    # the first request's body has line ends; the second's head starts after its last byte
    body = b"x\n" * 40
    first = b"POST /posted HTTP/1.1\r\nHost: here\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    assert _exchange(address, first + LONG_LINE) == [b"HTTP/1.1 200 OK /posted 80", URI_TOO_LONG]
    chunked = b"POST /chunked HTTP/1.1\r\nHost: here\r\nTransfer-Encoding: chunked\r\n\r\n" \
              b"1a\r\n" + b"y\n" * 13 + b"\r\n3;ext=1\r\nzzz\r\n0\r\nX-Trailer: t\r\n\r\n"
    assert _exchange(address, chunked + LONG_LINE) == [b"HTTP/1.1 200 OK /chunked 29", URI_TOO_LONG]
    assert _exchange(address, chunked + LONG_HEADER) == [b"HTTP/1.1 200 OK /chunked 29", HEADERS_TOO_LARGE]


def test_pipelined_requests_within_the_bound_are_all_answered_in_order(address: tuple[str, int]) -> None:
    near = b"GET /near HTTP/1.1\r\nHost: here\r\nX-Padding: " + b"b" * (MAX_HEAD_BYTES - 100) + b"\r\n\r\n"
    last = b"GET /last HTTP/1.1\r\nHost: here\r\nConnection: close\r\n\r\n"
    assert _exchange(address, FINE + near + FINE + last) == [
        b"HTTP/1.1 200 OK /first 0", b"HTTP/1.1 200 OK /near 0", b"HTTP/1.1 200 OK /first 0",
        b"HTTP/1.1 200 OK /last 0"]
