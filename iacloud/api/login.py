"""Tokens over HTTP, as Keystone's `/v3/auth/tokens`: log in (a session token for one project),
see who a token is, log out. The identity store does the work (iacloud/identity): password
check, rate limit, audit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from iacloud.api import auth
from iacloud.api.schemas import ErrorBody
from iacloud.identity import LoginRefused, RateLimited

router = APIRouter(prefix="/v1/auth")


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)
    project: str = Field(max_length=63)


class TokenOut(BaseModel):
    user: str
    project: str
    role: str
    expires_at: datetime | None = None
    token: str | None = Field(None, description="Only in the answer to a login.")


def _out(principal: Any, token: str | None = None, expires: datetime | None = None) -> TokenOut:
    return TokenOut(user=principal.user, project=principal.project, role=str(principal.role),
                    expires_at=expires, token=token)  # fmt: skip


@router.post("/tokens", status_code=201, response_model=TokenOut, responses={
    401: {"model": ErrorBody, "description": "Unknown user, wrong password or no role"},
    429: {"model": ErrorBody, "description": "Too many failed logins; see Retry-After"},
})  # fmt: skip
def login(body: Login, request: Request, response: Response) -> TokenOut:
    """A session token for the user in the project; also in the `X-Subject-Token` header."""
    try:
        issued = request.app.state.identity.login(
            body.username, body.password, body.project, auth.client_of(request)
        )
    except RateLimited as exc:
        raise HTTPException(
            429, {"message": str(exc)}, headers={"Retry-After": str(exc.retry_after)}
        ) from None
    except LoginRefused as exc:
        raise HTTPException(401, {"message": str(exc)}) from None
    response.headers["X-Subject-Token"] = issued.token
    response.headers["Cache-Control"] = "no-store"
    return _out(issued.principal, issued.token, issued.expires_at)


@router.get("/tokens", response_model=TokenOut)
def whoami(request: Request) -> TokenOut:
    """Who the request's token stands for."""
    return _out(auth.authenticate(request))


@router.delete("/tokens", status_code=204)
def logout(request: Request) -> Response:
    """End the request's own token (a session or an API key)."""
    principal = auth.authenticate(request)
    token = auth.token_of(request)
    assert token is not None
    request.app.state.identity.revoke(token, by=principal, client=auth.client_of(request))
    return Response(status_code=204)
