"""PostgreSQL state URLs: the schema parameter iacloud adds, and the password masked for output."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from iacloud.errors import UserError

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_SECRET_PARAMS = frozenset({"password", "sslpassword"})
MASK = "***"


def mask_url(url: str) -> str:
    """The URL with any password (in the user part or a query parameter) replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":" + MASK
        netloc = f"{userinfo}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, MASK if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="/*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass(frozen=True)
class PgTarget:
    conninfo: str  # what libpq gets: the URL without iacloud's own parameters
    schema: str | None  # None: the connection's own search_path decides (public by default)
    shown: str  # the URL with the password masked, for messages


def parse_url(url: str) -> PgTarget:
    """Split `schema=NAME` off a postgresql:// URL. The name is checked (lower-case letters,
    digits, underscore; at most 63 characters) since it becomes an SQL identifier."""
    shown = mask_url(url)
    try:
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise UserError(f"state URL '{shown}': not a valid URL ({exc})") from None
    schemas = [v for k, v in pairs if k == "schema"]
    if len(schemas) > 1:
        raise UserError(f"state URL '{shown}': 'schema' is given {len(schemas)} times")
    schema = schemas[0] if schemas else None
    if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
        raise UserError(
            f"state URL '{shown}': schema {schema!r} is not a plain lower-case SQL name "
            "(letters, digits and _, at most 63 characters, not starting with a digit)"
        )
    rest = urlencode([(k, v) for k, v in pairs if k != "schema"], safe="/")
    conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment))
    return PgTarget(conninfo=conninfo, schema=schema, shown=shown)
