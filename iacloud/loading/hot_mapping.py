"""The shared parts of mapping HOT resources onto ours: a resource on its way (`Entry`), what
the mapping makes of a template (`Translation`), and the mapper's helpers every type uses
(references to other resources of the template, properties taken, refused or noted)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from iacloud.errors import Diagnostic
from iacloud.expressions import FUNCTIONS
from iacloud.loading.hot_functions import HotError, walk_functions

GROUP = "OS::Heat::ResourceGroup"
INDEX = "%index%"


@dataclass
class Entry:
    """One HOT resource on its way to ours; `into` names the resource a merged one lives in."""

    name: str
    hot_type: str
    properties: dict[str, Any]
    depends_on: list[str]
    count: Any = None  # a ResourceGroup's count
    out: dict[str, Any] | None = None
    into: str | None = None
    inline: Any = None  # a software config: what get_resource of it stands for


@dataclass
class Translation:
    """What the types make of a template's resources."""

    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[tuple[str, HotError]] = field(default_factory=list)  # (address, error)
    failed: set[str] = field(default_factory=set)  # resources not mapped (reported)
    # (HOT resource, HOT property, our field): where a diagnostic about our field points
    renames: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[tuple[str, str, str]] = field(default_factory=list)  # (address, field, text)
    entries: dict[str, Entry] = field(default_factory=dict)


def ref_name(value: Any) -> str | None:
    """The resource a `{get_resource: NAME}` names, else None."""
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("get_resource"), str):
        return str(value["get_resource"])
    return None


def is_catalog_name(value: Any) -> bool:
    """Whether a property names something by name (not a resource of the template)."""
    if isinstance(value, str):
        return True
    return isinstance(value, dict) and len(value) == 1 and "get_param" in value


class MapperBase:
    """What every type's mapping uses."""

    def __init__(self, raw: dict[str, Entry], types: frozenset[str]) -> None:
        self.entries = raw
        self.types = types  # our resource types installed
        self.result = Translation(entries=raw)
        self.net_names: dict[str, str] = {}  # a Net's `name` property -> its resource

    # -- helpers ---------------------------------------------------------------------------
    def note(self, entry: Entry, prop: str, text: str) -> None:
        self.result.notes.append((f"resources.{entry.name}", prop, text))

    def target(self, value: Any, path: str, *kinds: str) -> str:
        """The template resource a property names with get_resource, of one of `kinds`."""
        name = ref_name(value)
        if name is None:
            if isinstance(value, (str, dict)):
                raise HotError(
                    f"expected {{get_resource: NAME}} of a {' or '.join(kinds)} in this "
                    f"template, found {value!r}",
                    path,
                    "by name, only a server's flavor, image, key_name and networks and a "
                    "volume's image can name things outside the template (the site catalog)",
                )
            raise HotError(f"expected {{get_resource: NAME}}, found {value!r}", path)
        entry = self.entries.get(name)
        if entry is None:
            raise HotError(f"reference to unknown resource {name!r}", path)
        if entry.hot_type not in kinds:
            raise HotError(f"{name!r} is a {entry.hot_type}, expected a {' or '.join(kinds)}", path)
        return name

    def named_or_ref(self, value: Any, path: str, *kinds: str) -> Any:
        """A site catalog name (a string, or get_param of one) as it is, resolved by the loader
        like a TOML stack's (`catalog_refs`); else `{get_resource: NAME}` of one of `kinds`."""
        return value if is_catalog_name(value) else self.ref(value, path, *kinds)

    def ref(self, value: Any, path: str, *kinds: str) -> Any:
        """`{get_resource: NAME}` of one of `kinds`, also when chosen by `if`."""
        if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("if"), list):
            cond, *branches = value["if"]
            return {"if": [cond, *(self.ref(b, path, *kinds) for b in branches)]}
        return {"get_resource": self.target(value, path, *kinds)}

    def take(
        self,
        entry: Entry,
        known: dict[str, Callable[[Any], None] | str | None],
        harmless: tuple[str, ...] = (),
    ) -> None:
        """Hand each property to its handler; harmless ones become notes, others errors."""
        for key, value in entry.properties.items():
            if value is None:
                continue
            if key in known:
                action = known[key]
                if callable(action):
                    action(value)
                elif isinstance(action, str):
                    assert entry.out is not None
                    entry.out[action] = value
                    self.result.renames.append((entry.name, key, action))
            elif key in harmless or key in ("name", "description", "tags", "metadata"):
                self.note(entry, key, f"'{key}' is accepted and has no effect")
            else:
                supported = ", ".join(sorted(known))
                raise HotError(
                    f"property '{key}' of {entry.hot_type} is not supported",
                    key,
                    f"supported: {supported}",
                )

    # -- per type --------------------------------------------------------------------------
    def member(self, e: Entry, value: Any, path: str, kind: str) -> tuple[str, bool]:
        """A resource of `kind` named by get_resource, or, inside a ResourceGroup of the same
        count, member %index% of a group of them (`{get_attr: [GROUP, resource.%index%]}`):
        (name, per member)."""
        arg = value.get("get_attr") if isinstance(value, dict) and len(value) == 1 else None
        if not (isinstance(arg, list) and len(arg) == 2 and arg[1] == f"resource.{INDEX}"):
            name = self.target(value, path, kind)
            if self.entries[name].count is not None and e.count is not None:
                raise HotError(f"name the member: {{get_attr: [{name}, resource.%index%]}}", path)
            return name, False
        name = self.target({"get_resource": arg[0]}, path, kind)
        group = self.entries[name]
        if e.count is None or group.count is None:
            raise HotError(f"resource.%index% of {name!r} needs both to be ResourceGroups", path)
        if group.count != e.count:
            raise HotError(
                f"the group {name!r} and this one must have the same count",
                path,
                "give both the same count (the same parameter)",
            )
        return name, True


def referenced(value: Any) -> set[str]:
    """The resource names a raw value refers to with get_resource / get_attr."""
    found: set[str] = set()

    def visit(key: str, arg: Any, where: str) -> Any:
        name = arg if key == "get_resource" else (arg[0] if isinstance(arg, list) and arg else None)
        if isinstance(name, str):
            found.add(name.split("[", 1)[0])
        return {key: arg}

    walk_functions(value, visit)
    return found


def has_function(value: Any) -> bool:
    if isinstance(value, dict):
        if len(value) == 1 and next(iter(value)) in FUNCTIONS:
            return True
        return any(has_function(v) for v in value.values())
    if isinstance(value, list):
        return any(has_function(v) for v in value)
    return False


def redirect(raw: dict[str, Entry], name: str) -> str:
    entry = raw.get(name)
    return entry.into if entry is not None and entry.into is not None else name


def notes_as_diagnostics(
    notes: list[tuple[str, str, str]], file: str, lines: dict[str, int]
) -> list[Diagnostic]:
    out = []
    for address, prop, text in notes:
        line = lines.get(f"{address}.{prop}") or lines.get(address)
        out.append(Diagnostic(text, file, address, prop or None, None, line))
    return out
