"""A stand-in for iacloud.identity's IdentityStore until it lands: tokens from a JSON file
(re-read at every call, so a test revokes a token by rewriting the file)."""

from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path


class Role(enum.Enum):
    reader = "reader"
    member = "member"
    admin = "admin"


@dataclass(frozen=True)
class Principal:
    user: str
    project: str
    role: Role

    def may_change(self) -> bool:
        return self.role in (Role.member, Role.admin)

    def is_admin(self) -> bool:
        return self.role is Role.admin


class StandInIdentity:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.audit_log = path.with_suffix(".audit")

    def authenticate(self, token: str) -> Principal | None:
        entry = json.loads(self.path.read_text()).get(token)
        if entry is None:
            return None
        expires = entry.get("expires")
        if expires and datetime.fromisoformat(expires) < datetime.now(timezone.utc):
            return None
        return Principal(entry["user"], entry["project"], Role(entry["role"]))

    def audit(
        self, principal: Principal, action: str, target: str, client: str, outcome: str
    ) -> None:
        with open(self.audit_log, "a") as f:
            f.write(json.dumps([principal.user, action, target, client, outcome]) + "\n")


def from_env() -> StandInIdentity:
    return StandInIdentity(Path(os.environ["IACLOUD_TEST_TOKENS"]))
