"""Who is calling: the token (Keystone's `X-Auth-Token`, `Authorization: Bearer`, or the
dashboard's cookie) turned into a Principal by the identity store, and what it may do in the
project of the path. Another project's things do not exist for it (404, never 403)."""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import HTTPException, Request

COOKIE = "iacloud_token"


class Identity(Protocol):
    """What the API needs of iacloud.identity's IdentityStore."""

    def authenticate(self, token: str) -> Any: ...

    def audit(
        self, principal: Any, action: str, target: str, client: str, outcome: str
    ) -> None: ...

    def login(self, username: str, password: str, project: str, client: str) -> Any: ...

    def revoke(self, token: str, *, by: Any = None, client: str = "local") -> bool: ...


def token_of(request: Request) -> str | None:
    token = request.headers.get("x-auth-token")
    if token:
        return token.strip()
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    # The dashboard's cookie authenticates reads; a change only where the dashboard checked
    # its form's CSRF token: a page of another origin (another port of the same host is the
    # same "site" to SameSite) can make a browser send the cookie with a POST.
    if request.method in ("GET", "HEAD") or getattr(request.state, "csrf_checked", False):
        return request.cookies.get(COOKIE) or None
    return None


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def authenticate(request: Request) -> Any:
    token = token_of(request)
    principal = request.app.state.identity.authenticate(token) if token else None
    if principal is None:
        raise HTTPException(
            401,
            {"message": "a valid token is needed (X-Auth-Token or Authorization: Bearer)"},
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


def in_project(request: Request, project: str, change: bool = False) -> Any:
    """The caller, if it belongs to `project` (else 404) and may read or change there (403)."""
    principal = authenticate(request)
    if principal.project != project:
        raise HTTPException(404, {"message": f"no project '{project}'"})
    if change and not principal.may_change():
        audit(request, principal, f"api.{request.method.lower()}", request.url.path, "denied")
        raise HTTPException(403, {"message": "this needs the member or admin role"})
    return principal


def audit(request: Request, principal: Any, action: str, target: str, outcome: str) -> None:
    request.app.state.identity.audit(principal, action, target, client_of(request), outcome)
