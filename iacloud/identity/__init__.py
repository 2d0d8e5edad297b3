"""Projects, users, roles, tokens and the audit log (Keystone's job at its smallest), kept in
the state database beside the stacks' state. `IdentityStore.open(state_url)` is the way in."""

from __future__ import annotations

from iacloud.identity.model import (
    AlreadyExists,
    ApiKeyInfo,
    AuditEvent,
    IdentityError,
    IssuedToken,
    LoginRefused,
    Principal,
    ProjectInfo,
    RateLimited,
    Role,
    RoleAssignment,
    UnknownName,
    UserInfo,
)
from iacloud.identity.store import SESSION_TTL, IdentityStore
from iacloud.identity.throttle import LoginPolicy

__all__ = [
    "SESSION_TTL",
    "AlreadyExists",
    "ApiKeyInfo",
    "AuditEvent",
    "IdentityError",
    "IdentityStore",
    "IssuedToken",
    "LoginPolicy",
    "LoginRefused",
    "Principal",
    "ProjectInfo",
    "RateLimited",
    "Role",
    "RoleAssignment",
    "UnknownName",
    "UserInfo",
]
