"""A stack file with its state backend and providers, and the stack's name read by the
loader's rules: what every engine function starts from."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from iacloud import limits
from iacloud.config import StackConfig
from iacloud.errors import Diagnostic, UserError
from iacloud.loading import hot_front, load_stack
from iacloud.loading.site_file import load_site
from iacloud.paths import data_root
from iacloud.plan import Plan
from iacloud.provider import ProviderSet, Registry, StackInfo
from iacloud.site_hosts import CatalogHost
from iacloud.stack import STACK_NAME
from iacloud.state import StateBackend, open_backend
from iacloud.state.model import Snapshot
from iacloud.state.pg_url import mask_url


def stack_name(path: Path) -> str:
    """The stack's name without loading it whole (commands that only read state need no
    parameters), by the loader's rules: `name` if set, else the file name, either a valid
    stack name. A HOT template's name is its file name."""
    if hot_front.is_template(path):
        if not STACK_NAME.fullmatch(path.stem):
            raise UserError(
                Diagnostic(
                    f"the file name {json.dumps(path.stem)} is not a valid stack name: 1 to 63 "
                    "letters, digits, '_' or '-', starting with a letter or digit",
                    file=str(path),
                )
            )
        return path.stem
    try:
        data = limits.parse_toml(limits.read_text(path))
    except FileNotFoundError:
        raise UserError(f"{path}: stack file not found") from None
    except (limits.InputError, ValueError) as exc:  # ValueError: TOMLDecodeError
        raise UserError(f"{path}: cannot read the stack file: {exc}") from None
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not STACK_NAME.fullmatch(name):
        where = "'name'" if "name" in data else f"the file name {json.dumps(path.stem)}"
        raise UserError(
            Diagnostic(
                f"{where} is not a valid stack name: 1 to 63 letters, digits, '_' or '-', "
                "starting with a letter or digit",
                file=str(path),
                field="name",
            )
        )
    return name


def prepare_state(url: str) -> None:
    """Make the state database `url` names if it does not exist yet: a server keeps tables of
    its own in it, and the SQLite backend refuses a file that has tables but not its own."""
    backend = open_backend(url, Path("."))
    try:
        backend.ensure_store()
    finally:
        backend.close()


@dataclass
class Workspace:
    """One stack file with its state backend and providers."""

    stack_file: Path
    state_url: str | None = None
    lock_timeout: float = 0.0
    registry: Registry = field(default_factory=Registry.discover)
    read_only: bool = False  # read commands: the state file is opened mode=ro, never changed
    site_file: Path | None = None  # --site; else IACLOUD_SITE or a default (iacloud.site)
    # The stack's name in state instead of the file's: the HTTP API keeps each project's
    # stacks apart under names of its own; the CLI leaves it None.
    state_key: str | None = None
    _backend: StateBackend | None = None
    _locked: str | None = None  # the stack whose lock this workspace holds (see locked)
    _name: str | None = None

    @property
    def stack_dir(self) -> Path:
        """The stack file's directory, symlinks resolved (where its default state lives)."""
        try:
            return self.stack_file.resolve().parent
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            raise UserError(f"{self.stack_file}: cannot resolve the path: {exc}") from None

    @property
    def backend(self) -> StateBackend:
        if self._backend is None:
            url = self.state_url or os.environ.get("IACLOUD_STATE")
            self._backend = open_backend(url, self.stack_dir, self.read_only)
        return self._backend

    @contextmanager
    def locked(self, stack: str, operation: str) -> Iterator[None]:
        """Hold the stack's lock; nested uses share it. `apply STACK` holds it from its plan to
        the end of its apply, so a run that waited for another plans against that run's
        result instead of failing on a plan made before it."""
        if self._locked == stack:
            yield
            return
        with self.backend.locked(stack, operation, self.lock_timeout):
            self._locked = stack
            try:
                yield
            finally:
                self._locked = None

    def open_read_only(self) -> StateBackend:
        """A separate backend that can only read: it takes no lock and cannot write, so it
        runs beside an apply holding the lock and leaves the state file as it found it."""
        url = self.state_url or os.environ.get("IACLOUD_STATE")
        return open_backend(url, self.stack_dir, read_only=True)

    @property
    def name(self) -> str:
        """The stack's name from its file (see stack_name)."""
        if self._name is None:
            self._name = self.state_key or stack_name(self.stack_file)
        return self._name

    def state_name(self) -> str:
        """Where the state is, for messages: a URL with its password masked, or the path."""
        url = self.state_url or os.environ.get("IACLOUD_STATE")
        return mask_url(url) if url else str(self.stack_file.parent / ".iacloud" / "state.db")

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()

    def load(self, params: Sequence[str] = (), env_files: Sequence[Path] = ()) -> StackConfig:
        site = load_site(self.site_file)
        config = load_stack(self.stack_file, self.registry, list(params), list(env_files), site)
        return replace(config, name=self.state_key) if self.state_key else config

    def stack_info(self, name: str, snapshot_or_plan: Snapshot | Plan) -> StackInfo:
        stack_id = snapshot_or_plan.stack_id
        return StackInfo(
            name=name,
            id=stack_id,
            directory=self.stack_dir,
            data_dir=data_root() / "stacks" / stack_id,
            hosts=self.site_hosts(),
        )

    def site_hosts(self) -> dict[str, CatalogHost]:
        """The site catalog's [hosts] table (empty without a catalog or without hosts)."""
        site = load_site(self.site_file)
        return dict(site.hosts) if site is not None else {}

    def providers(
        self, name: str, source: Snapshot | Plan, settings: Mapping[str, Any]
    ) -> ProviderSet:
        return ProviderSet(self.registry, self.stack_info(name, source), dict(settings))

    def settings_from_plan(self, plan: Plan) -> dict[str, Any]:
        """The plan's provider settings, validated as a stack's are: a plan file is user input
        too (edited, or made by another version), and bad settings must fail before apply
        begins a state version."""
        out = {}
        problems: list[Diagnostic] = []
        for name, values in plan.provider_settings.items():
            cls = self.registry.providers.get(name)
            if cls is None:
                raise UserError(f"the plan needs provider '{name}', which is not installed")
            try:
                out[name] = cls.Settings.model_validate(values)
            except ValidationError as exc:
                problems += [
                    Diagnostic(
                        str(e["msg"]).removeprefix("Value error, "),
                        address=f"provider_settings.{name}",
                        field=".".join(str(p) for p in e["loc"]) or None,
                    )
                    for e in exc.errors(include_url=False)
                ]
        if problems:
            raise UserError(problems)
        return out
