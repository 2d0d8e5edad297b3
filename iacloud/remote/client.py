"""A typed client of `iacloud serve`'s REST routes (/v1/{project}/...) over httpx.

Every failure becomes an IacloudError the CLI prints without a traceback: 400 diagnostics as a
UserError, 401/403/404/409/412 with the server's message. The token is sent as X-Auth-Token and
never appears in a message: URLs and transport errors pass through `redact` first.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from iacloud.engine import IacloudError, UserError
from iacloud.errors import Diagnostic, printable


class ApiError(IacloudError):
    """The server refused a request (its HTTP status) or could not be reached (status 0)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiClient:
    def __init__(self, url: str, token: str, project: str | None = None,
                 timeout: float = 60.0) -> None:  # fmt: skip
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UserError(Diagnostic("not an http:// or https:// URL", field="--api"))
        if not token:
            raise UserError(
                Diagnostic("IACLOUD_TOKEN is not set: the API needs a token", field="--api")
            )
        # shown in messages: without any user:password@ the URL may carry
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.url = parts._replace(netloc=netloc).geturl().rstrip("/")
        self._token = token
        self._http = httpx.Client(base_url=url.rstrip("/"), headers={"X-Auth-Token": token},
                                  timeout=timeout, follow_redirects=False)  # fmt: skip
        self.project = project or self.whoami()["project"]

    def close(self) -> None:
        self._http.close()

    def redact(self, text: str) -> str:
        return text.replace(self._token, "(token)") if self._token else text

    # -- plumbing --

    def _path(self, *parts: str) -> str:
        return "/v1/" + "/".join(quote(p, safe="") for p in (self.project, *parts))

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(self.redact(f"cannot reach the API at {self.url}: {exc}")) from None
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ApiError(f"the API at {self.url} answered {path} with no JSON") from None

    def _error(self, response: httpx.Response) -> IacloudError:
        try:
            body = response.json()
        except ValueError:
            body = {}
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            detail = body.get("detail") if isinstance(body, dict) else None
            error = detail if isinstance(detail, dict) else {"message": str(detail or "")}
        message = printable(self.redact(str(error.get("message") or response.reason_phrase)))
        diagnostics = error.get("diagnostics")
        if response.status_code in (400, 422) and isinstance(diagnostics, list) and diagnostics:
            return UserError(
                Diagnostic(**{k: d.get(k) for k in ("message", "file", "address", "field", "hint")})
                for d in diagnostics
                if isinstance(d, dict) and isinstance(d.get("message"), str)
            )
        if response.status_code == 401:
            return ApiError(f"the API at {self.url} refused the token (401): {message}", 401)
        return ApiError(f"{message} (HTTP {response.status_code})", response.status_code)

    # -- identity --

    def whoami(self) -> dict[str, Any]:
        return self._json("GET", "/v1/auth/tokens")  # type: ignore[no-any-return]

    # -- stacks --

    def stack(self, name: str) -> dict[str, Any] | None:
        """The stack, or None if the project has no stack of that name."""
        try:
            return self._json("GET", self._path("stacks", name))  # type: ignore[no-any-return]
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def preview_create(self, name: str, template: str, params: dict[str, Any]) -> dict[str, Any]:
        body = {"stack_name": name, "template": template, "parameters": params}
        return self._json("POST", self._path("stacks", "preview"), json=body)  # type: ignore[no-any-return]

    def preview_update(self, name: str, template: str, params: dict[str, Any]) -> dict[str, Any]:
        body = {"template": template, "parameters": params}
        path = self._path("stacks", name, "preview")
        query = {"replace_parameters": "true"}
        return self._json("PUT", path, json=body, params=query)  # type: ignore[no-any-return]

    def preview_delete(self, name: str) -> dict[str, Any]:
        return self._json("DELETE", self._path("stacks", name, "preview"))  # type: ignore[no-any-return]

    def create(self, name: str, template: str, params: dict[str, Any]) -> dict[str, Any]:
        body = {"stack_name": name, "template": template, "parameters": params}
        return self._json("POST", self._path("stacks"), json=body)["operation"]  # type: ignore[no-any-return]

    def update(self, name: str, template: str, params: dict[str, Any],
               etag: str | None) -> dict[str, Any]:  # fmt: skip
        headers = {"If-Match": etag} if etag else {}
        body = {"template": template, "parameters": params}
        path = self._path("stacks", name)
        return self._json("PUT", path, json=body, headers=headers)["operation"]  # type: ignore[no-any-return]

    def delete(self, name: str, etag: str | None) -> dict[str, Any]:
        headers = {"If-Match": etag} if etag else {}
        path = self._path("stacks", name)
        return self._json("DELETE", path, headers=headers)["operation"]  # type: ignore[no-any-return]

    def drift(self, name: str) -> dict[str, Any]:
        return self._json("POST", self._path("stacks", name, "drift"))["operation"]  # type: ignore[no-any-return]

    def state(self, name: str, serial: int | None = None) -> dict[str, Any]:
        """The recorded state (as `show --json`) and the outputs (as `output --json`)."""
        params = {"serial": serial} if serial is not None else {}
        return self._json("GET", self._path("stacks", name, "state"), params=params)  # type: ignore[no-any-return]

    def events(self, name: str, limit: int) -> list[dict[str, Any]]:
        """The last `limit` events, oldest first."""
        params = {"limit": max(1, min(limit, 1000)), "sort_dir": "desc"}
        rows = self._json("GET", self._path("stacks", name, "events"), params=params)["events"]
        return list(reversed(rows))

    # -- operations --

    def operation(self, op_id: str) -> dict[str, Any]:
        return self._json("GET", self._path("operations", op_id))  # type: ignore[no-any-return]

    def wait(self, op_id: str, timeout: float = 30.0) -> dict[str, Any]:
        path = self._path("operations", op_id, "wait")
        return self._json("GET", path, params={"timeout": timeout},  # type: ignore[no-any-return]
                          timeout=timeout + 30)  # fmt: skip

    def cancel(self, op_id: str) -> dict[str, Any]:
        return self._json("POST", self._path("operations", op_id, "cancel"))  # type: ignore[no-any-return]

    def stream(self, op_id: str, after: int = 0) -> Iterator[tuple[int, str, dict[str, Any]]]:
        """The operation's Server-Sent Events as (id, event, data) until the operation ends."""
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(after)}
        path = self._path("operations", op_id, "events")
        try:
            timeout = httpx.Timeout(60.0, read=120.0)  # the server pings every 15 s
            with self._http.stream("GET", path, headers=headers, timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._error(response)
                seq, kind, data = 0, "message", []
                for line in response.iter_lines():
                    if line.startswith(":"):
                        continue  # a ping
                    if not line:
                        if data:
                            yield seq, kind, json.loads("\n".join(data))
                        kind, data = "message", []
                        continue
                    field, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if field == "id":
                        seq = int(value) if value.isdigit() else seq
                    elif field == "event":
                        kind = value
                    elif field == "data":
                        data.append(value)
        except httpx.HTTPError as exc:
            raise ApiError(self.redact(f"the event stream of {self.url} broke: {exc}")) from None
