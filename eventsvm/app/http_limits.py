"""The HTTP server's bound on a request's head (request line and headers), which uvicorn's
httptools protocol does not have: it buffers a header of any size (two 32 MB headers cost the
process 130 MB).

Past MAX_HEAD_BYTES the request is answered 431 Request Header Fields Too Large (414 URI Too Long
when its request line alone is past it) with an OpenStack error body in the shape of the service
its path names, and the connection is closed; a request
the parser cannot read gets its 400 in the same shape rather than uvicorn's plain text. The bytes
are counted as they arrive, before the parser buffers them, so a refused head never costs more
than the bound plus one socket read. Bodies are bounded by the API itself (413, RequestEnvelope).
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
    """uvicorn's httptools protocol, refusing a request whose head is larger than MAX_HEAD_BYTES."""

    max_head_bytes = MAX_HEAD_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True
        self._request_line_read = False
        self._refused = False

    def data_received(self, data: bytes) -> None:
        while data and not self._refused:
            if not self._in_head:
                super().data_received(data)
                return
            room = self.max_head_bytes - self._head_bytes
            if room <= 0:
                self._refuse()
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            # where the request line ends decides 414 or 431 if the head turns out too large
            self._request_line_read = self._request_line_read or b"\n" in piece
            super().data_received(piece)
            if self.transport.is_closing():
                return

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # the next request on this connection
        self._in_head, self._head_bytes, self._request_line_read = True, 0, False

    def _refuse(self) -> None:
        self._refused = True
        log.info("refused a request head of more than %d bytes from %s", self.max_head_bytes, self.client)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # a pipelined request's answer is still being written: no room for ours
            self.transport.close()
            return
        if not self._request_line_read:
            self._answer_and_close(414, f"The request URI is longer than {self.max_head_bytes} bytes.")
            return
        self._answer_and_close(431, f"Request header fields are larger than {self.max_head_bytes} bytes.")

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
