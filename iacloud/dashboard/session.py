"""Dashboard sessions: the identity store's login as an HttpOnly, SameSite=Strict cookie
(Secure over https), the CSRF token each form carries, and logout (the token revoked).

The CSRF token of a session is derived from its session token (a keyed hash, domain-separated
from the identity store's token hash): nothing to store, the same on every server sharing the
database, and useless without the cookie it belongs to. The login form, before any session,
uses a double-submit cookie instead."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import Response

from iacloud.api import auth

COOKIE = auth.COOKIE  # the API reads the same cookie for GETs (the live log's event stream)
LOGIN_COOKIE = "iacloud_login_csrf"
FORM_LIMIT = 1 << 20  # bytes of a form body (a template fits; the API's own limit is 4 MiB)


class LoginNeeded(Exception):
    """No valid session: the page answers with a redirect to the login page."""


class Refused(Exception):
    """A request the dashboard answers with an error page (status, message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def csrf_token(session_token: str) -> str:
    return hashlib.sha256(b"iacloud-dashboard-csrf\0" + session_token.encode()).hexdigest()


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def principal(request: Request) -> Any:
    """The session's principal, or LoginNeeded."""
    token = request.cookies.get(COOKIE)
    found = request.app.state.identity.authenticate(token) if token else None
    if found is None:
        raise LoginNeeded()
    return found


def in_project(request: Request, project: str) -> Any:
    """The session's principal in `project`; another project's pages do not exist (404)."""
    p = principal(request)
    if p.project != project:
        raise Refused(404, f"no project '{project}'")
    return p


async def form(request: Request) -> dict[str, str]:
    """An url-encoded form body (one value per name), bounded in size."""
    body = await request.body()
    if len(body) > FORM_LIMIT:
        raise Refused(413, f"the form is over the limit of {FORM_LIMIT} bytes")
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "not a readable form") from None
    return {k: v[-1] for k, v in fields.items()}


def check_csrf(request: Request, fields: dict[str, str]) -> Any:
    """The session's principal if the form carries its CSRF token (else 403); marks the
    request so the API's functions it calls accept the session cookie for this change."""
    token = request.cookies.get(COOKIE)
    sent = fields.get("csrf", "")
    if not token or not hmac.compare_digest(csrf_token(token), sent):
        raise Refused(403, "the form's CSRF token is missing or wrong: reload the page")
    found = principal(request)
    request.state.csrf_checked = True
    return found


def login_form(request: Request, page: Response) -> None:
    """Give the login page's response its double-submit cookie (the page's `csrf` value)."""
    page.set_cookie(LOGIN_COOKIE, login_csrf(request), httponly=True, samesite="strict",
                    secure=_secure(request), path="/dashboard/login")  # fmt: skip


def login_csrf(request: Request) -> str:
    value = getattr(request.state, "login_csrf", None)
    if value is None:
        value = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
        request.state.login_csrf = value
    return value


def check_login_csrf(request: Request, fields: dict[str, str]) -> None:
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie, fields.get("csrf", "")):
        raise Refused(403, "the login form's CSRF token is missing or wrong: reload the page")


def start(request: Request, response: Response, token: str, expires_at: datetime) -> None:
    max_age = max(1, int((expires_at - datetime.now(timezone.utc)).total_seconds()))
    response.set_cookie(COOKIE, token, max_age=max_age, httponly=True, samesite="strict",
                        secure=_secure(request), path="/")  # fmt: skip
    response.delete_cookie(LOGIN_COOKIE, path="/dashboard/login")


def end(request: Request, response: Response, who: Any) -> None:
    token = request.cookies.get(COOKIE)
    if token:
        request.app.state.identity.revoke(token, by=who, client=auth.client_of(request))
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                           secure=_secure(request))  # fmt: skip
