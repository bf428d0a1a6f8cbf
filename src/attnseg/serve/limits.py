"""What stands in front of the app: the HTTP protocol `guarded_h11` (header size and a header timeout, enforced
before the headers are read whole), and the ASGI layers `Observe` (request ids, the access log with control
characters escaped, every response counted, a 500 for anything that escaped, a 431 for too many headers) and
`BodyLimit` (413 before an oversized body is read)."""
from __future__ import annotations

import json
import logging
import re
import time
import uuid

log = logging.getLogger("attnseg.serve")  # access lines at INFO, failures with their traceback at ERROR


MAX_HEADER_BYTES = 16 * 1024  # the request line and headers together (browsers send 1-2 KB)
MAX_HEADERS = 100
HEADER_TIMEOUT_S = 10.0  # from a request's first byte (or the connection's start) to the end of its headers


class _BodyTooLarge(Exception):
    pass


def printable(text: str, limit: int = 200) -> str:
    """`text` cut to `limit` characters with control and other unprintable characters escaped (\\n, \\x1b, ...):
    a client's URL cannot forge a line, or a terminal sequence, in the server's log."""
    text = text[:limit]
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def guarded_h11(header_timeout_s: float = HEADER_TIMEOUT_S, max_header_bytes: int = MAX_HEADER_BYTES):
    """uvicorn's h11 protocol with the request head bounded: at most `max_header_bytes` are buffered before the
    headers end (431 past that; h11 enforces it while it reads), and a connection whose request head is not
    complete `header_timeout_s` after it started (an idle new connection, a client trickling headers) is
    answered 408 and closed. uvicorn's other parser (httptools) accepts headers of any size and has no such
    timer, so the server runs this one."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11(H11Protocol):
        def __init__(self, config, *a, **kw):
            config.h11_max_incomplete_event_size = max_header_bytes
            super().__init__(config, *a, **kw)
            self._head_timer = None
            self._error_hint = None
            read = self.conn.next_event

            def next_event():  # remember why h11 refused a request: uvicorn answers every refusal with 400
                try:
                    return read()
                except h11.RemoteProtocolError as e:
                    self._error_hint = e.error_status_hint
                    raise

            self.conn.next_event = next_event

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                self._disarm()  # the head is complete (or the connection is done)
            else:
                self._arm()  # part of a head: the timer runs from its first byte, not from the last

        def connection_lost(self, exc):
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(header_timeout_s, self._head_late)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_late(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self.conn.our_state is h11.IDLE and self._buffered():
                self._refuse(408, f"request headers not complete within {header_timeout_s:g} s")
            else:  # nothing sent so far (or between requests): close quietly, as the keep-alive timeout does
                self.transport.close()

        def _buffered(self) -> bool:
            return bool(self.conn.trailing_data[0])

        def send_400_response(self, msg: str) -> None:
            if self._error_hint == 431:
                return self._refuse(431, f"headers over the limit of {max_header_bytes // 1024} KB")
            self._refuse(400, "not a valid HTTP/1.1 request")

        def _refuse(self, status: int, message: str) -> None:
            body = json.dumps({"error": f"request: {message}"}).encode()
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close"
                b"\r\n\r\n" % (status, {400: b"Bad Request", 408: b"Request Timeout",
                                          431: b"Request Header Fields Too Large"}[status], len(body)) + body)
            self.transport.close()
            log.info("- - - %d (%s)", status, message)

    return GuardedH11


class Observe:
    """Outermost ASGI layer: gives each request an id (X-Request-ID), counts every response by path and status
    (refusals by the layers inside it included), writes an access line, and turns an exception that escaped
    everything else into a 500 JSON with the request id, logging the traceback under that id."""

    def __init__(self, app, count, paths: tuple[str, ...], headers: list[tuple[bytes, bytes]] | None = None,
                 tag_id: bool = True):
        self.app, self.count, self.paths, self.headers, self.tag_id = app, count, paths, list(headers or []), tag_id

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = scope.get("headers") or ()
        size = sum(len(k) + len(v) + 4 for k, v in headers)
        if len(headers) > MAX_HEADERS or size > MAX_HEADER_BYTES:  # a head that arrived whole in one read
            self.count("other", "431")
            return await _send_json(send, 431, {"error": f"request: headers over the limit of {MAX_HEADERS} "
                                                         f"headers or {MAX_HEADER_BYTES // 1024} KB"})
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if re.fullmatch(r"[\w.-]{1,64}", given) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        status, started = [500], [False]
        t0 = time.perf_counter()

        async def tagged(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
                tag = [(b"x-request-id", rid.encode())] if self.tag_id else []
                msg = {**msg, "headers": [*msg.get("headers", []), *tag, *self.headers]}
                started[0] = True
            await send(msg)

        try:
            await self.app(scope, receive, tagged)
        except Exception:
            log.exception("request %s %s %s failed", rid, printable(scope.get("method", "")),
                          printable(scope.get("path", "")))
            status[0] = 500
            if not started[0]:
                await _send_json(send, 500, {"error": "internal error", "request_id": rid},
                                 [(b"x-request-id", rid.encode())])
        path = scope.get("path", "")
        route = "/hf/{model}" if path.startswith("/hf/") else path  # one series for every model's route
        self.count(route if route in self.paths else "other", str(status[0]))
        log.info("%s %s %s %d %.1fms", rid, printable(scope.get("method", ""), 16), printable(path), status[0],
                 (time.perf_counter() - t0) * 1000)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 before it is read whole
    (Content-Length checked first; a chunked body is counted as it arrives and cut off)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        too_big = {"error": f"upload over the limit of {self.limit / 2**20:g} MB (--max-upload-mb)"}
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _send_json(send, 413, too_big)
        seen = 0
        started = False

        async def counted():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge()
            return msg

        async def tracked_send(msg):
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counted, tracked_send)
        except _BodyTooLarge:
            if not started:
                await _send_json(send, 413, too_big)


async def _send_json(send, status: int, body: dict, headers: list | None = None):
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
                + (headers or [])})
    await send({"type": "http.response.body", "body": data})
