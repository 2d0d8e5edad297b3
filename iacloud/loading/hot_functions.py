"""HOT's template versions and what each allows, and the functions only a HOT front resolves:
`get_file` (read relative to the template, confined to its directory tree), the pseudo
parameters (`OS::stack_name`, `OS::stack_id`, `OS::project_id`) and condition names (inlined as
their expressions, so `if` and a resource's `condition` carry plain equals/not/and/or).
Everything else is evaluated by `iacloud.expressions`, shared with TOML stacks.

The versions and their functions follow Heat's template guide (hot_spec.rst).
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iacloud import limits

_BASE = ("get_attr", "get_file", "get_param", "get_resource", "list_join", "str_replace")
_KILO = (*_BASE, "repeat", "digest")
_LIBERTY = (*_KILO, "str_split")
_MITAKA = (*_LIBERTY, "map_merge")
_NEWTON = (*_MITAKA, "map_replace", "yaql", "if", "equals", "not", "and", "or")
_OCATA = (*_NEWTON, "str_replace_strict", "filter")
_PIKE = (
    *_OCATA,
    "make_url",
    "list_concat",
    "list_concat_unique",
    "contains",
    "str_replace_vstrict",
)
# date -> (release name, functions and condition functions it allows)
VERSIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "2013-05-23": ("icehouse", _BASE),
    "2014-10-16": ("juno", _BASE),
    "2015-04-30": ("kilo", _KILO),
    "2015-10-15": ("liberty", _LIBERTY),
    "2016-04-08": ("mitaka", _MITAKA),
    "2016-10-14": ("newton", _NEWTON),
    "2017-02-24": ("ocata", _OCATA),
    "2017-09-01": ("pike", _PIKE),
    "2018-03-02": ("queens", _PIKE),
    "2018-08-31": ("rocky", _PIKE),
    "2021-04-16": ("wallaby", _PIKE),
}
# the release names Heat accepts as versions (from newton on)
NAMES = {name: date for date, (name, _) in VERSIONS.items() if date >= "2016-10-14"}
# functions of some HOT version that iacloud does not implement, and why
UNSUPPORTED = {
    "yaql": "yaql expressions are not supported: write the value with the other functions "
    "(map_merge, repeat, list_concat, if, ...) or compute it outside the template",
    "resource_facade": "resource_facade needs a provider template (nested stacks), which "
    "iacloud does not have",
    "make_url": "make_url is not supported: build the URL with str_replace or list_join",
    "Fn::Select": "Fn::Select is not supported: use a get_attr/get_param path instead",
    "Fn::Base64": "CloudFormation functions are not supported",
    "Fn::GetAZs": "CloudFormation functions are not supported",
    "Fn::Join": "CloudFormation functions are not supported: use list_join",
    "Fn::MemberListToMap": "CloudFormation functions are not supported",
    "Fn::Replace": "CloudFormation functions are not supported: use str_replace",
    "Fn::ResourceFacade": "CloudFormation functions are not supported",
    "Fn::Split": "CloudFormation functions are not supported: use str_split",
    "Ref": "CloudFormation functions are not supported: use get_resource or get_param",
}
ALL_FUNCTIONS = frozenset({*_PIKE, *UNSUPPORTED})
PSEUDO_PARAMETERS = ("OS::stack_name", "OS::stack_id", "OS::project_id")
MAX_FILE_BYTES = 1 << 20  # one get_file: user data and scripts
PROJECT_ID = "iacloud"  # iacloud has no projects: one constant, documented
_STACK_ID_NAMESPACE = uuid.UUID("7d0a3e2c-53f4-4b8e-9a7e-2f0c4b6d1a58")


class HotError(ValueError):
    """A HOT construct iacloud refuses; `path` is where (dotted, inside the entry)."""

    def __init__(self, message: str, path: str = "", hint: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.hint = hint


def version_of(raw: Any) -> str:
    """The version's date, from a date or a release name; HotError lists the known ones."""
    text = str(raw).strip() if isinstance(raw, (str, int)) else None
    if text in VERSIONS:
        return text
    if text in NAMES:
        return NAMES[text]
    known = ", ".join(f"{d} ({n})" if d >= "2016-10-14" else d for d, (n, _) in VERSIONS.items())
    raise HotError(f"unknown heat_template_version {raw!r}", hint=f"known versions: {known}")


def allowed(version: str) -> frozenset[str]:
    return frozenset(VERSIONS[version][1])


def pseudo_value(name: str, stack_name: str) -> str:
    if name == "OS::stack_name":
        return stack_name
    if name == "OS::stack_id":  # stable for a stack name: documented in the README
        return str(uuid.uuid5(_STACK_ID_NAMESPACE, stack_name))
    return PROJECT_ID


def read_file(base: Path, name: Any, path: str) -> str:
    """get_file: a relative path inside the template's directory tree, resolved with its
    symbolic links, a regular UTF-8 file of bounded size."""
    if not isinstance(name, str) or not name:
        raise HotError(f"get_file expects a relative file path, found {name!r}", path)
    if name.startswith(("/", "file:", "http:", "https:")) or "://" in name:
        raise HotError(
            f"get_file: {name!r} is not a relative path",
            path,
            "files are read only from the template's directory tree",
        )
    root = base.resolve()
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        raise HotError(
            f"get_file: {name!r} is outside the template's directory",
            path,
            "no '..' or symbolic link may lead out of the template's directory tree",
        )
    try:
        info = os.stat(target)
    except OSError:
        raise HotError(f"get_file: no such file {name!r}", path) from None
    if not stat.S_ISREG(info.st_mode):
        raise HotError(f"get_file: {name!r} is {limits.describe_kind(info.st_mode)}", path)
    try:
        return limits.read_text(target, MAX_FILE_BYTES)
    except limits.InputError as exc:
        raise HotError(
            f"get_file {name!r}: {str(exc).replace('the file', 'it', 1)}", path
        ) from None


class Rewriter:
    """One pass over a HOT value: version checks, get_file, pseudo parameters and condition
    names in `if`. `conditions` maps a condition name to its raw expression."""

    def __init__(
        self,
        version: str,
        base: Path,
        stack_name: str,
        conditions: dict[str, Any],
    ) -> None:
        self.version = version
        self.allowed = allowed(version)
        self.base = base
        self.stack_name = stack_name
        self.conditions = conditions
        self._inlined: dict[str, Any] = {}
        self._inlining: list[str] = []

    def value(self, value: Any, path: str) -> Any:
        if isinstance(value, dict):
            if len(value) == 1:
                ((key, arg),) = value.items()
                if isinstance(key, str) and key in ALL_FUNCTIONS:
                    return self._function(key, arg, path)
            return {k: self.value(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    def _check(self, key: str, path: str) -> None:
        if key in UNSUPPORTED:
            raise HotError(UNSUPPORTED[key], path)
        if key not in self.allowed:
            first = next(d for d, (_, fns) in VERSIONS.items() if key in fns)
            raise HotError(
                f"{key} is not available in heat_template_version {self.version}",
                path,
                f"it needs {first} or later",
            )

    def _function(self, key: str, arg: Any, path: str) -> Any:
        self._check(key, path)
        if key == "get_file":
            return read_file(self.base, arg, path)
        if key == "get_param":
            name = arg[0] if isinstance(arg, list) and arg else arg
            if isinstance(name, str) and name in PSEUDO_PARAMETERS:
                if isinstance(arg, list) and len(arg) > 1:
                    raise HotError(f"get_param: {name} is a string, it has no keys", path)
                return pseudo_value(name, self.stack_name)
            return {key: arg}
        if key == "if":
            if not isinstance(arg, list) or not 2 <= len(arg) <= 3:
                raise HotError("if expects [condition, value_if_true, value_if_false]", path)
            if len(arg) == 2 and self.version < "2021-04-16":
                raise HotError("if with two arguments needs heat_template_version 2021-04-16", path)
            return {
                "if": [
                    self.condition(arg[0], path),
                    *(self.value(a, path) for a in arg[1:]),
                ]
            }
        return {key: self.value(arg, path)}

    def condition(self, value: Any, path: str) -> Any:
        """A condition (name, boolean or expression) as a plain expression."""
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return self._named(value, path)
        if isinstance(value, dict) and len(value) == 1:
            ((key, arg),) = value.items()
            if key in ("not", "and", "or"):
                self._check(key, path)
                if key == "not":
                    return {"not": self.condition(arg, path)}
                if not isinstance(arg, list):
                    raise HotError(f"{key} expects a list of conditions", path)
                return {key: [self.condition(a, path) for a in arg]}
            if key in ("equals", "contains", "get_param"):
                return self.value(value, path)
            if key == "yaql":
                raise HotError(UNSUPPORTED["yaql"], path)
        raise HotError(
            f"a condition is a condition name, true/false, or equals/not/and/or/contains/"
            f"get_param; found {value!r}",
            path,
        )

    def _named(self, name: str, path: str) -> Any:
        if name in self._inlined:
            return self._inlined[name]
        if name not in self.conditions:
            known = ", ".join(sorted(self.conditions)) or "none are declared"
            raise HotError(f"unknown condition {name!r}", path, f"conditions: {known}")
        if name in self._inlining:
            cycle = " -> ".join([*self._inlining[self._inlining.index(name) :], name])
            raise HotError(f"conditions refer to each other in a cycle: {cycle}", path)
        self._inlining.append(name)
        try:
            expression = self.condition(self.conditions[name], f"conditions.{name}")
        finally:
            self._inlining.pop()
        self._inlined[name] = expression
        return expression


def walk_functions(value: Any, visit: Callable[[str, Any, str], Any], path: str = "") -> Any:
    """Rebuild a value, letting `visit(name, arg, path)` replace each one-key function table."""
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key in ("get_resource", "get_attr"):
                return visit(key, arg, path)
        return {
            k: walk_functions(v, visit, f"{path}.{k}" if path else str(k)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [walk_functions(v, visit, f"{path}[{i}]") for i, v in enumerate(value)]
    return value
