"""The ASGI layers in front of the app: `Observe` (outermost: request ids, the access log, every response
counted, a 500 for anything that escaped) and `BodyLimit` (413 before an oversized body is read)."""
from __future__ import annotations

import json
import logging
import re
import time
import uuid

log = logging.getLogger("attnseg.serve")  # access lines at INFO, failures with their traceback at ERROR


class _BodyTooLarge(Exception):
    pass


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
            log.exception("request %s %s %s failed", rid, scope.get("method"), scope.get("path"))
            status[0] = 500
            if not started[0]:
                await _send_json(send, 500, {"error": "internal error", "request_id": rid},
                                 [(b"x-request-id", rid.encode())])
        path = scope.get("path", "")
        self.count(path if path in self.paths else "other", str(status[0]))
        log.info("%s %s %s %d %.1fms", rid, scope.get("method"), path[:200], status[0],
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
