"""The web dashboard of `iacloud serve` (Horizon's job at its smallest): server-rendered
pages under /dashboard on the API's own application, reading and changing stacks through
the API's functions and the engine's, with a little plain JavaScript for the live parts."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from iacloud.dashboard import actions, pages, session
from iacloud.dashboard.web import HERE, PREFIX, error_page


def mount(app: FastAPI) -> None:
    """Add the dashboard's routes, static files and error pages to the API's app."""

    @app.exception_handler(session.LoginNeeded)
    async def login_needed(request: Request, exc: session.LoginNeeded) -> Response:
        if request.method == "GET" and not request.url.path.endswith(".json"):
            return RedirectResponse(f"{PREFIX}/login", status_code=303)
        return error_page(request, 401, "not logged in (or the session ended): log in again")

    @app.exception_handler(session.Refused)
    async def refused(request: Request, exc: session.Refused) -> Response:
        return error_page(request, exc.status, exc.message)

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=303)

    app.include_router(actions.router)  # /dashboard/login before /dashboard/{project}/...
    app.include_router(pages.router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")
