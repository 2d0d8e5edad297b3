"""The FastAPI application: settings, life cycle (store, jobs), error bodies, body limit,
request metrics, and the waiters that long polls and event streams sleep on."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from iacloud import engine
from iacloud.api import auth
from iacloud.api.jobs import Jobs, JobSettings
from iacloud.api.store import Conflict, StackExists, Store
from iacloud.api.telemetry import Metrics
from iacloud.engine import IacloudError, LockHeld, StateError, UserError
from iacloud.errors import printable

log = logging.getLogger("iacloud.serve")


@dataclass
class ServeSettings:
    state_url: str
    data_dir: Path  # the server's files: submitted templates written for runs
    workers: int = 4
    step_jobs: int = 4
    lock_timeout: float = 60.0
    max_body: int = 4 << 20
    max_wait: float = 60.0  # longest long poll
    stale_after: float = 30.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def work_dir(self) -> Path:
        return self.data_dir / "templates"


class Waiters:
    """Wakes long polls and event streams when this server changed an operation; they also
    look at the database every second, for changes other servers made."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.events: dict[str, set[asyncio.Event]] = {}

    def notify(self, op_id: str) -> None:  # any thread
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._wake, op_id)

    def _wake(self, op_id: str) -> None:
        for ev in self.events.get(op_id, ()):
            ev.set()

    async def wait(self, op_id: str, timeout: float) -> None:
        ev = asyncio.Event()
        self.events.setdefault(op_id, set()).add(ev)
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            group = self.events.get(op_id)
            if group is not None:
                group.discard(ev)
                if not group:
                    del self.events[op_id]


def open_store(state_url: str) -> Store:
    """The service tables in the state's database, which is made first if new (its backend
    refuses a file that holds tables but not its own)."""
    engine.prepare_state(state_url)
    sqlite_path = None
    if not state_url.startswith(("postgres://", "postgresql://")):
        sqlite_path = Path(state_url.removeprefix("sqlite://"))
    return Store(state_url, sqlite_path)


def _error(status: int, message: str, **more: Any) -> JSONResponse:
    return JSONResponse({"error": {"message": message, **more}}, status_code=status)


def create_app(settings: ServeSettings, identity: auth.Identity,
               registry: engine.Registry | None = None) -> FastAPI:  # fmt: skip
    from iacloud.api import login, operations, routes

    metrics = Metrics()
    waiters = Waiters()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        waiters.loop = asyncio.get_running_loop()
        store = open_store(settings.state_url)
        app.state.store = store
        jobs = Jobs(store, JobSettings(
            state_url=settings.state_url, work_dir=settings.work_dir, workers=settings.workers,
            step_jobs=settings.step_jobs, lock_timeout=settings.lock_timeout,
            stale_after=settings.stale_after, **settings.extra,
        ), app.state.registry, metrics, waiters.notify)  # fmt: skip
        app.state.jobs = jobs
        await asyncio.to_thread(jobs.start)
        try:
            yield
        finally:
            await asyncio.to_thread(jobs.stop)
            store.close()

    app = FastAPI(
        title="iacloud",
        version="1",
        description="Stacks, operations and events of iacloud, Heat-style: changes answer "
        "202 with an operation to poll, wait on, stream or cancel.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.identity = identity
    app.state.registry = registry or engine.Registry.discover()
    app.state.metrics = metrics
    app.state.waiters = waiters
    app.state.list_cache = {}  # (project, limit, marker) -> (etag, body): routes.list_stacks

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> JSONResponse:
        return _error(400, "; ".join(str(d) for d in exc.diagnostics),
                      diagnostics=[d.to_json() for d in exc.diagnostics])  # fmt: skip

    @app.exception_handler(LockHeld)
    async def lock_held(request: Request, exc: LockHeld) -> JSONResponse:
        return _error(409, printable(str(exc)))

    @app.exception_handler(StackExists)
    async def exists(request: Request, exc: StackExists) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict) -> JSONResponse:
        return _error(412, str(exc))

    @app.exception_handler(StateError)
    async def state_error(request: Request, exc: StateError) -> JSONResponse:
        return _error(503, printable(str(exc)))

    @app.exception_handler(IacloudError)
    async def iacloud_error(request: Request, exc: IacloudError) -> JSONResponse:
        return _error(400, printable(str(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, dict) else {"message": str(exc.detail)}
        return JSONResponse({"error": detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))  # fmt: skip

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); see the server's log")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    def metrics_page(request: Request) -> Response:
        principal = auth.authenticate(request)
        if not principal.is_admin():
            raise StarletteHTTPException(403, {"message": "metrics need the admin role"})
        return Response(metrics.render(principal.project), media_type="text/plain; version=0.0.4")

    app.include_router(login.router)
    app.include_router(routes.router)
    app.include_router(operations.router)
    app.add_middleware(BodyLimit, limit=settings.max_body)
    app.add_middleware(Timing, metrics=metrics)
    return app


class Timing:
    """Request latency by method, route template and status (a plain ASGI middleware: the
    decorator kind costs a task and a stream per request)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - started
            )


class BodyLimit:
    """Refuse request bodies over `limit` bytes (413) before the application sees them: a
    declared length at once, a chunked body once it grows past the limit (it is read here,
    at most `limit` bytes, and handed on whole)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", ()):
            if key == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _too_large(send, self.limit)
                return
        chunks: list[bytes] = []
        size = 0
        first: Message | None = None
        while first is None:
            message = await receive()
            if message["type"] != "http.request":
                first = message  # a disconnect: the application sees it
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _too_large(send, self.limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        pending = [first]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Send, limit: int) -> None:
    body = JSONResponse(
        {"error": {"message": f"request body over the limit of {limit} bytes"}}, status_code=413
    )
    await body({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
