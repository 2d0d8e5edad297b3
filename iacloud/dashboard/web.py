"""What every dashboard page shares: the Jinja2 environment (autoescaped), rendering with
the session's CSRF token, security headers, and the API's errors as error pages."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException

from iacloud.api.store import Conflict, StackExists, Store
from iacloud.dashboard import session, topology
from iacloud.engine import IacloudError, LockHeld, StateError, UserError
from iacloud.errors import printable

HERE = Path(__file__).parent
PREFIX = "/dashboard"

ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every value is escaped unless it is Markup made here (the SVG)
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["status_class"] = topology.status_class
# JSON as text (escaped like any text), not Jinja's tojson meant for inside <script>
ENV.filters["json"] = lambda value: json.dumps(value, sort_keys=True, default=str)

# Scripts and styles only from files of this package: an injected <script> would not run.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def render(request: Request, name: str, code: int = 200, **context: Any) -> HTMLResponse:
    token = request.cookies.get(session.COOKIE)
    context.setdefault("csrf", session.csrf_token(token) if token else "")
    context.setdefault("user", None)
    context.setdefault("project", None)
    html = ENV.get_template(name).render(prefix=PREFIX, **context)
    return HTMLResponse(html, status_code=code, headers=HEADERS)


def secured(response: Response) -> Response:
    response.headers.update(HEADERS)
    return response


def error_page(request: Request, status: int, message: str | list[str]) -> HTMLResponse:
    lines = [message] if isinstance(message, str) else message
    return render(request, "error.html", status, status=status, lines=lines)


@contextlib.contextmanager
def api_errors() -> Iterator[None]:
    """The errors of the API's functions and the engine as Refused (an error page)."""
    try:
        yield
    except HTTPException as exc:
        if exc.status_code == 401:
            raise session.LoginNeeded() from None
        detail = exc.detail if isinstance(exc.detail, dict) else {"message": str(exc.detail)}
        raise session.Refused(exc.status_code, str(detail.get("message", ""))) from None
    except UserError as exc:
        raise session.Refused(400, "; ".join(printable(str(d)) for d in exc.diagnostics)) from None
    except (LockHeld, StackExists) as exc:
        raise session.Refused(409, printable(str(exc))) from None
    except Conflict as exc:
        raise session.Refused(409, printable(str(exc))) from None
    except StateError as exc:
        raise session.Refused(503, printable(str(exc))) from None
    except IacloudError as exc:
        raise session.Refused(400, printable(str(exc))) from None
