"""The HTTP server's bound on a request's head (request line and headers), which uvicorn's
httptools protocol does not have: it buffers a header of any size (two 32 MB headers cost the
process 130 MB).

Past MAX_HEAD_BYTES the request is answered 431 Request Header Fields Too Large (414 URI Too Long
when its request line alone is past it) with an OpenStack error body in the shape of the service
its path names, and the connection is closed; each request of several pipelined on one connection
is measured from its own first byte, and its refusal follows the answers to those before it. A request
the parser cannot read gets its 400 in the same shape rather than uvicorn's plain text. The bytes
are counted as they arrive, before the parser buffers them, so a refused head never costs more
than the bound plus one socket read. Bodies are bounded by the API itself (413, RequestEnvelope;
an image upload's by glance's image_size_cap, eventsvm.api.image_data).
"""

from __future__ import annotations

import json
import logging
import uuid
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from eventsvm.api.errors import error_body, service_of

log = logging.getLogger(__name__)

# 64 KiB: eight times what Apache and eventlet (nova's own servers) take per header line, and more
# than a keystone token with a long catalogue of roles needs; a head beyond it is no client's.
MAX_HEAD_BYTES = 64 * 1024
# After the 431 the client may still be sending its head: read and drop it this long, so closing
# with unread data does not reset the connection before the client has read the answer.
_LINGER_S = 2.0


class BoundedHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request whose head is larger than MAX_HEAD_BYTES.

    The bytes are fed to the parser in pieces that end where a request can end (a line end in a
    head, the last byte of a Content-Length body or of a chunk), so every request's head is
    counted from its own first byte, also the second of two pipelined in one socket read."""

    max_head_bytes = MAX_HEAD_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True
        self._request_line_read = False
        self._head_begun = False  # a byte of this request other than the blank lines before it
        self._body: _BodyFraming | None = None
        self._refused = False
        # the refusal of a pipelined head, held until the answers before it are written
        self._held: tuple[int, str] | None = None

    def data_received(self, data: bytes) -> None:
        while data and not self._refused:
            if self._in_head:
                room = self.max_head_bytes - self._head_bytes
                if room <= 0:
                    self._refuse()
                    return
                line_end = data.find(b"\n", 0, room)
                size = line_end + 1 if line_end >= 0 else min(room, len(data))
            else:
                size = self._body.next_piece(data) if self._body is not None else len(data)
            piece, data = data[:size], data[size:]
            if self._in_head:
                self._head_bytes += len(piece)
                # a line end (but a blank line before the request) decides 414 or 431 if the head
                # turns out too large
                self._head_begun = self._head_begun or bool(piece.strip())
                if self._head_begun and piece.endswith(b"\n"):
                    self._request_line_read = True
            super().data_received(piece)
            if self.transport.is_closing():
                return

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._body = _BodyFraming.of(self.headers)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # the next request on this connection begins with the next byte
        self._in_head, self._head_bytes, self._body = True, 0, None
        self._head_begun = self._request_line_read = False

    def on_response_complete(self) -> None:
        super().on_response_complete()
        answered = self.cycle is None or self.cycle.response_complete
        if self._held is not None and answered and not self.pipeline:
            status, message = self._held
            self._answer_and_close(status, message)

    def _refuse(self) -> None:
        self._refused = True
        log.info("refused a request head of more than %d bytes from %s", self.max_head_bytes, self.client)
        if not self._request_line_read:
            refusal = (414, f"The request URI is longer than {self.max_head_bytes} bytes.")
        else:
            refusal = (431, f"Request header fields are larger than {self.max_head_bytes} bytes.")
        cycle = self.cycle
        if (cycle is not None and not cycle.response_complete) or self.pipeline:
            # requests before it are still being answered: ours follows theirs, in order
            self._held = refusal
            self.flow.pause_reading()
            return
        self._answer_and_close(*refusal)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request it cannot parse, in OpenStack's shape instead of plain text."""
        self._refused = True
        self._answer_and_close(400, f"{msg} The request is not valid HTTP/1.1.")

    def _answer_and_close(self, status: int, message: str) -> None:
        path = getattr(self, "url", b"").split(b"?", 1)[0].decode("latin-1", errors="replace")
        body = json.dumps(error_body(service_of(path), status, message)).encode()
        head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode()]
        head += [name + b": " + value for name, value in self.server_state.default_headers]
        head += [b"content-type: application/json", b"content-length: " + str(len(body)).encode(),
                 b"x-openstack-request-id: " + f"req-{uuid.uuid4()}".encode(), b"connection: close"]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the answer, then FIN; what still arrives is dropped
            self.loop.call_later(_LINGER_S, self.transport.close)
        else:
            self.transport.close()


# enough of a chunk-size line for any size a body can have; the parser refuses longer ones
_FRAMING_LINE_BYTES = 64


class _BodyFraming:
    """Where the body of a request ends, so the bytes after it are counted as the next head: a
    Content-Length body by its length, a chunked one by its chunk sizes (the parser itself refuses
    a malformed one; this only has to cut the bytes at the same places)."""

    def __init__(self, length: int | None) -> None:
        self._left = length or 0  # bytes of the body (or of the current chunk and its CRLF) to come
        self._chunked = length is None
        self._trailers = False  # past the last chunk: header lines up to a blank one
        self._line = b""  # the start of a framing line that a socket read cut (its first bytes)

    @classmethod
    def of(cls, headers: list[tuple[bytes, bytes]]) -> _BodyFraming:
        """The framing the request's headers announce."""
        found = dict(headers)
        if b"chunked" in found.get(b"transfer-encoding", b"").lower():
            return cls(None)
        try:
            return cls(int(found.get(b"content-length", b"0")))
        except ValueError:
            return cls(0)  # the parser answers it 400

    def next_piece(self, data: bytes) -> int:
        """How many of `data`'s bytes to feed next (at least one)."""
        if self._left > 0:
            size = min(self._left, len(data))
            self._left -= size
            return size
        if not self._chunked:
            return len(data)  # no body: the parser ends the request where its head ends
        line_end = data.find(b"\n")
        if line_end < 0:
            self._line = (self._line + data)[:_FRAMING_LINE_BYTES]
            return len(data)
        line, self._line = (self._line + data[:line_end]).strip(), b""
        if self._trailers:
            return line_end + 1
        try:
            chunk = int(line.split(b";", 1)[0], 16)
        except ValueError:
            return line_end + 1  # a malformed size: the parser refuses it
        if chunk == 0:
            self._trailers = True
        else:
            self._left = chunk + 2
        return line_end + 1
