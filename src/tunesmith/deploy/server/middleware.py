"""Pure-ASGI layers around the FastAPI app: every response counted, request bodies size-limited.

Order (outermost first): ``CountResponses`` -> ``BodyLimit`` -> FastAPI. Counting sits outside the body
limit and outside FastAPI's own error handling, so a 413, a 500 and a request whose client left are
counted like any answer.
"""

from __future__ import annotations

import json
import time

from tunesmith.deploy.server.metrics import ServerMetrics
from tunesmith.deploy.server.protocol import APIError

CLIENT_GONE = 499  # nginx's "client closed request": counted in /metrics, never seen by anyone


class CountResponses:
    """Counts every response by route and status, and its latency by route."""

    def __init__(self, app, metrics: ServerMetrics, routes: set[str]):
        self.app, self.metrics, self.routes = app, metrics, routes

    def _route(self, scope) -> str:
        route = getattr(scope.get("route"), "path", None)
        if route is None:  # rejected before routing (413) or no such route: one bucket for unknown paths
            route = scope["path"] if scope["path"] in self.routes else "unmatched"
        return route

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), None

        async def send_counted(msg):
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, send_counted)
        except Exception:
            status = status or 500  # an exception that escaped the app: the server answers 500
            raise
        finally:  # no response at all: the client left before one was sent
            route = self._route(scope)
            self.metrics.requests.labels(route, str(status or CLIENT_GONE)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)


class BodyLimit:
    """Answers 413 to a body over ``max_bytes`` (declared or streamed) before anything parses it."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def _reject(self, send) -> None:
        body = json.dumps(APIError(413, f"request body exceeds {self.max_bytes} bytes",
                                   code="request_too_large").body()).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    if int(v) > self.max_bytes:
                        return await self._reject(send)
                except ValueError:
                    return await self._reject(send)
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._reject(send)
            chunks.append(chunk)
            if not msg.get("more_body"):
                break
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)
