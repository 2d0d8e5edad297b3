"""Submitted templates as the engine needs them: a stack file on disk and `-p` assignments.

A template is kept in the service tables (store.py); a run writes it under the server's work
directory, `<data dir>/serve/<project>/<stack>/<sha256>.toml|.yaml`, named by its content so a
run never sees another revision's text. Project and stack names are checked with full matches
before they become path parts. Diagnostics name the template as `template`, not that path.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from iacloud import engine
from iacloud.engine import UserError
from iacloud.errors import Diagnostic
from iacloud.stack import STACK_NAME

PROJECT_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")  # iacloud.identity's rule
FORMATS = {"toml": ".toml", "hot": ".yaml"}
_HOT = re.compile(r"^\s*heat_template_version\s*:", re.MULTILINE)
SHOWN_FILE = "template"


def check_names(project: str, name: str | None = None) -> None:
    if not PROJECT_NAME.fullmatch(project):
        raise UserError(Diagnostic("not a valid project name", field="project"))
    if name is not None and not STACK_NAME.fullmatch(name):
        raise UserError(
            Diagnostic(
                "not a valid stack name: 1 to 63 letters, digits, '_' or '-', starting with a "
                "letter or digit",
                field="stack_name",
            )
        )


def state_key(project: str, name: str) -> str:
    """The stack's name in the state database: the project's stacks kept apart from others'.
    '.' is in neither name's alphabet, so no two (project, stack) pairs share a key."""
    check_names(project, name)
    return f"{project}.{name}"


def detect_format(template: str, given: str | None) -> str:
    if given is not None:
        return given
    return "hot" if _HOT.search(template) else "toml"


def write(work_dir: Path, project: str, name: str, fmt: str, template: str) -> Path:
    """The template as a file of its own for the engine (written once per content)."""
    check_names(project, name)
    digest = hashlib.sha256(template.encode()).hexdigest()[:24]
    directory = work_dir / project / name
    path = directory / f"{digest}{FORMATS[fmt]}"
    if not path.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = directory / f".{digest}.{os.getpid()}.tmp"
        tmp.write_text(template)
        os.replace(tmp, path)
    return path


def assignments(parameters: Mapping[str, Any]) -> list[str]:
    """JSON parameter values as `-p NAME=VALUE` text, which the loader converts to each
    parameter's declared type (strings as they are, everything else as JSON)."""
    out = []
    for name, value in parameters.items():
        text = value if isinstance(value, str) else json.dumps(value)
        out.append(f"{name}={text}")
    return out


@dataclass
class Loaded:
    workspace: engine.Workspace
    config: Any  # the engine's StackConfig


def workspace(
    work_dir: Path, state_url: str, project: str, name: str, fmt: str, template: str,
    registry: engine.Registry, lock_timeout: float = 0.0, read_only: bool = False,
) -> engine.Workspace:  # fmt: skip
    path = write(work_dir, project, name, fmt, template)
    return engine.Workspace(path, state_url, lock_timeout, registry, read_only=read_only,
                            state_key=state_key(project, name))  # fmt: skip


def load(ws: engine.Workspace, parameters: Mapping[str, Any]) -> Any:
    """The stack's configuration; a UserError's diagnostics name `template`, not the path."""
    try:
        return ws.load(assignments(parameters))
    except UserError as exc:
        raise shown(exc, ws.stack_file) from None


def shown(exc: UserError, path: Path) -> UserError:
    """The error with the server's file name of the template replaced by `template`."""
    text = str(path)
    out = []
    for d in exc.diagnostics:
        out.append(
            replace(
                d,
                file=SHOWN_FILE if d.file == text else d.file,
                message=d.message.replace(text, SHOWN_FILE),
            )
        )
    return UserError(out)


def diagnostics_json(exc: UserError) -> list[dict[str, str | None]]:
    return [d.to_json() for d in exc.diagnostics]
