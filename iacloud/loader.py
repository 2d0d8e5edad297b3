"""Stack loading: a TOML stack file plus parameters becomes a validated StackConfig.

Everything that can be checked without touching a host is checked here: TOML syntax, the file's
shape (`iacloud.stack`), parameter types and Heat constraints, resource types and field names,
references, counts, inputs against each type's schema, provider settings and dependency cycles.
Every mistake becomes a Diagnostic; they are all collected and raised together in one UserError,
and no Python exception escapes for bad input.

Parameters are substituted and `count` expanded here; what remains in the properties are plain
values and `get_resource` / `get_attr` expression nodes (plus str_replace / list_join around
them), which the planner and executor evaluate once the referenced resources exist.
"""

from __future__ import annotations

import contextlib
import datetime
import difflib
import functools
import gc
import json
import math
import re
import sys
import typing
from collections.abc import Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
from pydantic import BaseModel, ValidationError

from iacloud import expressions as ex
from iacloud import limits, patterns
from iacloud.config import OutputConfig, ResourceConfig, StackConfig
from iacloud.errors import Diagnostic, UserError, did_you_mean
from iacloud.graph import cycle_diagnostics
from iacloud.provider import Registry, ResourceType
from iacloud.stack import (
    INDEX_TOKEN,
    MAX_COUNT,
    NAME,
    RESOURCE_KEYS,
    STACK_NAME,
    Constraint,
    EnvFile,
    OutputDef,
    ParameterDef,
    ResourceDef,
    StackFile,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REDACTED = "****"
# per field of a counted resource: beyond this many distinct problems the rest are only counted
MAX_INSTANCE_DIAGNOSTICS = 3
_NAME_RULE = "1 to 63 letters, digits, '_' or '-', starting with a letter or '_'"
# TOML scalars: values of these types hold no function and need no preparing
_PLAIN = frozenset({str, int, float, bool, datetime.datetime, datetime.date, datetime.time})
_SECTIONS = {"parameters": 1, "resources": 2, "outputs": 3, "provider": 4}
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_INSTANCE_OF = re.compile(r" or instance of \w+")
_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")
_TOML_KEY = re.compile(r"^\s*([^=\[#\s][^=#]*?)\s*=")
_TOML_TABLE = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]+")


class _Broken:
    """A field whose value could not be prepared (already reported): left out of validation."""


BROKEN = _Broken()


# ----------------------------------------------------------------------------------------------
# diagnostics plumbing


class _Sink:
    """Where diagnostics go; `count` lets a caller tell whether a step added any."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[Diagnostic] = []

    @property
    def count(self) -> int:
        return len(self.items)

    def add(
        self,
        message: str,
        address: str | None = None,
        field: str | None = None,
        hint: str | None = None,
        file: str | None = None,
    ) -> None:
        self.items.append(Diagnostic(message, file or self.file, address, field or None, hint))

    def extend(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.items.extend(diagnostics)


class _GroupSink(_Sink):
    """Diagnostics of the instances of one counted resource: a mistake in a shared template
    would otherwise be repeated for each of up to 10,000 instances."""

    def __init__(self, file: str, group_address: str) -> None:
        super().__init__(file)
        self.group_address = group_address
        self._same: dict[tuple[str | None, str], int] = {}  # (field, message) -> repeats
        self._per_field: dict[str | None, int] = {}
        self._dropped: dict[str | None, int] = {}
        self._total = 0

    @property
    def count(self) -> int:
        return self._total

    def add(
        self,
        message: str,
        address: str | None = None,
        field: str | None = None,
        hint: str | None = None,
        file: str | None = None,
    ) -> None:
        self._total += 1
        key = (field or None, message)
        if key in self._same:
            self._same[key] += 1
            return
        if self._per_field.get(key[0], 0) >= MAX_INSTANCE_DIAGNOSTICS:
            self._dropped[key[0]] = self._dropped.get(key[0], 0) + 1
            return
        self._per_field[key[0]] = self._per_field.get(key[0], 0) + 1
        self._same[key] = 0
        super().add(message, address, field, hint, file)

    def flush_into(self, target: _Sink) -> None:
        for d in self.items:
            repeats = self._same.get((d.field, d.message), 0)
            if repeats:
                more = f"the same in {repeats} other instance{'s' if repeats > 1 else ''}"
                d = Diagnostic(
                    d.message, d.file, d.address, d.field, f"{d.hint}; {more}" if d.hint else more
                )
            target.items.append(d)
        for fld, n in self._dropped.items():
            target.add(
                f"{n} more instance{'s' if n > 1 else ''} with problems in this field",
                self.group_address,
                fld,
            )


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, ex.EXPR_TYPES):
        return "expression"
    return type(value).__name__


def _render(value: Any, budget: int = 80) -> str:
    """TOML-like text of a value, cut short: what the user wrote, not Python's repr."""
    if isinstance(value, (*ex.EXPR_TYPES, ex.Unknown)):
        value = ex.to_json(value)
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(_render(v, budget) for v in value[:20]) + "]"
    elif isinstance(value, dict):
        items = list(value.items())[:20]
        text = "{ " + ", ".join(f"{k} = {_render(v, budget)}" for k, v in items) + " }"
        text = "{}" if not items else text
    else:
        text = str(value)
    return text if len(text) <= budget else text[: budget - 3] + "..."


def _redact(text: str, secrets: Iterable[str], min_length: int = 1) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= min_length and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _string_forms(value: Any) -> list[str]:
    """How a parameter value can appear in text: each scalar inside it. Booleans are left out:
    masking every "true" in a plan would hide everything and protect nothing."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (str, int, float)):
        return [str(value)] if str(value) else []
    if isinstance(value, list):
        return [s for v in value for s in _string_forms(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _string_forms(v)]
    return []


def _join_alternatives(messages: list[str]) -> str:
    """A union's errors as one: "input should be a valid integer or a valid number"."""
    lead = "input should be "
    if len(messages) > 1 and all(m.startswith(lead) for m in messages):
        return lead + " or ".join(m.removeprefix(lead) for m in messages)
    return " or ".join(messages)


def _path_text(parts: Sequence[str | int]) -> str:
    text = ""
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text


def _clean_loc(loc: tuple[str | int, ...], data: Any, error_type: str) -> list[str | int]:
    """A pydantic error location with union tags ('int', 'str', 'function-after[...]')
    dropped: only the steps that exist in the input survive."""
    out: list[str | int] = []
    current = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        in_dict = isinstance(current, dict) and part in current
        in_list = (
            isinstance(current, (list, tuple))
            and isinstance(part, int)
            and 0 <= part < len(current)
        )
        if in_dict or in_list:
            out.append(part)
            current = current[part]  # type: ignore[index]
        elif last and error_type in ("missing", "extra_forbidden"):
            out.append(part)
            current = None
    return out


def _submodels(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is None:
        return []
    args = typing.get_args(annotation)
    if origin in (dict, typing.Mapping) or (isinstance(origin, type) and origin is dict):
        args = args[1:]
    if origin is typing.Annotated:
        args = args[:1]
    return [m for a in args for m in _submodels(a)]


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


@functools.cache
def _field_set(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(_field_names(model))


def _fields_at(model: type[BaseModel], parts: Sequence[str | int]) -> list[str]:
    """The field names a (nested) model allows at a path: candidates for "did you mean"."""
    current: type[BaseModel] | None = model
    for part in parts:
        if current is None:
            return []
        if isinstance(part, int):
            continue
        info = current.model_fields.get(str(part))
        subs = _submodels(info.annotation) if info is not None else []
        current = subs[0] if subs else None
    return _field_names(current) if current is not None else []


def _plain(value: Any) -> bool:
    """A scalar or a flat list of scalars: the common value, which needs no parsing."""
    kind = type(value)
    return kind in _PLAIN or (kind is list and all(type(v) in _PLAIN for v in value))


def _has_expr(value: Any) -> bool:
    kind = type(value)
    if kind in _PLAIN:
        return False
    if kind is dict:
        return any(_has_expr(v) for v in value.values())
    if kind is list or kind is tuple:
        return any(_has_expr(v) for v in value)
    return isinstance(value, ex.EXPR_TYPES)


def _references(value: Any, path: str) -> Iterator[tuple[ex.GetResource | ex.GetAttr, str]]:
    """Every get_resource / get_attr in a prepared value, with the field path where it sits."""
    if isinstance(value, (ex.GetResource, ex.GetAttr)):
        yield value, path
    elif isinstance(value, ex.EXPR_TYPES):
        for node in ex.walk(value):  # inside str_replace / list_join: the function's path
            if isinstance(node, (ex.GetResource, ex.GetAttr)):
                yield node, path
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _references(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _references(v, f"{path}[{i}]")


def _closest_function(key: str) -> str | None:
    """The intrinsic function a one-key table probably meant, when its key is a near miss."""
    if key in ex.FUNCTIONS:
        return None
    cutoff = 0.6 if key.startswith(("get_", "str_", "list_")) else 0.8
    close = difflib.get_close_matches(key.lower().replace("-", "_"), ex.FUNCTIONS, 1, cutoff)
    return close[0] if close else None


def _scan(value: Any, path: str) -> tuple[str | None, list[tuple[str, str, str]]]:
    """One pass over a raw value: where %index% first appears (or None), and one-key tables
    whose key looks like a misspelled intrinsic function (path, key, suggestion)."""
    index_at: str | None = None
    near_misses: list[tuple[str, str, str]] = []
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if index_at is None and INDEX_TOKEN in item:
                index_at = where
        elif isinstance(item, dict):
            if len(item) == 1:
                (key,) = item
                suggestion = _closest_function(str(key))
                if suggestion:
                    near_misses.append((where, str(key), suggestion))
            for k, v in item.items():
                if index_at is None and INDEX_TOKEN in str(k):
                    index_at = where
                stack.append((v, f"{where}.{k}" if where else str(k)))
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return index_at, near_misses


# ----------------------------------------------------------------------------------------------
# parameters


def parse_param_assignment(text: str) -> tuple[str, str]:
    """`-p name=value` -> (name, value as text); the value is converted once its type is known."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise UserError(
            Diagnostic(
                f"-p expects NAME=VALUE, found {text.split('=', 1)[0]!r}",
                hint="for example -p web_count=3",
            )
        )
    return name, value


def convert_param(text: str, param_type: str) -> Any:
    """A `-p` value converted to the declared type; ValueError says what was expected."""
    if param_type == "string":
        return text
    if param_type == "number":
        stripped = text.strip()
        if len(stripped) > limits.MAX_NUMBER_CHARS:
            raise ValueError(f"expected a number of at most {limits.MAX_NUMBER_CHARS} characters")
        try:
            number = int(stripped)
        except ValueError:
            try:
                number = float(stripped)
            except ValueError:
                raise ValueError("expected a number") from None
            if not math.isfinite(number):
                raise ValueError("expected a finite number") from None
            if number.is_integer():
                number = int(number)
        return number
    if param_type == "boolean":
        try:
            return _BOOLEANS[text.strip().lower()]
        except KeyError:
            raise ValueError("expected a boolean: true/false, yes/no or 1/0") from None
    if param_type == "list":
        if text.lstrip().startswith("["):
            try:
                value = limits.parse_json(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"expected a JSON array: {exc.msg}") from None
            except limits.InputError as exc:
                raise ValueError(f"expected a JSON array: {exc}") from None
            if not isinstance(value, list):
                raise ValueError("expected a JSON array")
            return value
        return [item.strip() for item in text.split(",")] if text.strip() else []
    # map
    try:
        value = limits.parse_json(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"expected a JSON object: {exc.msg}") from None
    except limits.InputError as exc:
        raise ValueError(f"expected a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def _type_problem(value: Any, param_type: str) -> str | None:
    ok = {
        "string": isinstance(value, str),
        "number": isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value),
        "boolean": isinstance(value, bool),
        "list": isinstance(value, list),
        "map": isinstance(value, dict),
    }[param_type]
    return None if ok else f"expected a {param_type}, found {_kind(value)}"


_APPLIES_TO = {
    "allowed_values": ("string", "number", "boolean", "list"),
    "range": ("number",),
    "length": ("string", "list", "map"),
    "allowed_pattern": ("string", "list"),
}


def _bounds_text(what: str, lo: float | None, hi: float | None) -> str:
    """Heat's wording for range and length constraints."""

    def fmt(x: float) -> str:
        return f"{x:g}" if isinstance(x, float) else str(x)

    if lo is None and hi is not None:
        return f"{what} must be no greater than {fmt(hi)}"
    if hi is None and lo is not None:
        return f"{what} must be at least {fmt(lo)}"
    return f"{what} must be in the range {fmt(lo)} to {fmt(hi)}"  # type: ignore[arg-type]


def _same_value(a: Any, b: Any) -> bool:
    # True == 1 in Python, but not in a stack file
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _constraint_problem(value: Any, c: Constraint, hide: bool) -> str | None:
    """Heat's semantics: None when the value satisfies the constraint, else Heat's message."""
    if c.allowed_values is not None:
        items = value if isinstance(value, list) else [value]
        bad = [v for v in items if not any(_same_value(v, a) for a in c.allowed_values)]
        if bad:
            allowed = REDACTED if hide else _render(c.allowed_values)
            one = REDACTED if hide else _render(bad[0])
            return f"{one} is not an allowed value {allowed}"
        return None
    if c.range is not None:
        lo, hi = c.range.min, c.range.max
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return _bounds_text("the value", lo, hi)
        return None
    if c.length is not None:
        lo, hi = c.length.min, c.length.max
        n = len(value)
        if (lo is not None and n < lo) or (hi is not None and n > hi):
            return f"length {n}: " + _bounds_text("the length", lo, hi)
        return None
    pattern = c.allowed_pattern or ""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, str) or not patterns.matches(pattern, item):
            one = REDACTED if hide else _render(item)
            return f'{one} does not match pattern "{pattern}"'
    return None


def _constraint_text(c: Constraint) -> str:
    kind = c.kind
    if kind == "range":
        assert c.range is not None
        return "range " + _render(c.range.model_dump(exclude_none=True))
    if kind == "length":
        assert c.length is not None
        return "length " + _render(c.length.model_dump(exclude_none=True))
    if kind == "allowed_pattern":
        return f'allowed_pattern "{c.allowed_pattern}"'
    return "allowed_values"


# ----------------------------------------------------------------------------------------------
# the loader


@dataclass
class _Target:
    """What a reference needs to know of a resource; broken definitions stay known by name so
    one mistake does not turn into "unknown resource" errors everywhere else."""

    name: str
    type_cls: type[ResourceType] | None
    counted: bool
    count: int | None  # None when counted but the count could not be evaluated
    addresses: list[str] = field(default_factory=list)


@dataclass
class _Resource:
    name: str
    definition: ResourceDef
    type_cls: type[ResourceType] | None


class _Loader:
    def __init__(self, path: Path, registry: Registry) -> None:
        self.path = path
        self.file = str(path)
        self.registry = registry
        self.report = _Sink(self.file)
        self.param_defs: dict[str, ParameterDef] = {}
        self.param_names: set[str] = set()  # including broken definitions
        self.hidden_names: set[str] = set()
        self.values: dict[str, Any] = {}
        self.failed: set[str] = set()  # a given value was wrong (reported): no further errors
        self.secrets: set[str] = set()  # every candidate value of a hidden parameter
        self.targets: dict[str, _Target] = {}
        self.resources: list[_Resource] = []
        # name-level dependencies, for cycles: (dependency, dependent)
        self.names: list[str] = []
        self.name_edges: set[tuple[str, str]] = set()
        self.positions: dict[tuple[str, str], int] = {}  # (section, name) -> place in the file
        self.instance_total = 0  # resource instances declared so far
        self.dependency_total = 0  # dependencies of the instances expanded so far
        self.dependencies_over = False  # the limit was reached (reported once)
        self.group_sets: dict[str, frozenset[str]] = {}  # whole-group references, made once

    # -- value helpers ---------------------------------------------------------------------

    def show(self, value: Any) -> str:
        """A found value for a message, with its kind; redacted when a hidden value is in it."""
        # look for secrets in the whole text: a cut could leave half a secret showing
        whole = _render(value, budget=1 << 20)
        if any(s and s in whole for s in self.secrets):
            return REDACTED
        return f"{_render(value)} ({_kind(value)})"

    def pydantic_diagnostics(
        self,
        exc: ValidationError,
        data: Any,
        model: type[BaseModel],
        sink: _Sink,
        address: str,
        skip_missing: Iterable[str] = (),
        file: str | None = None,
    ) -> None:
        """pydantic's errors as diagnostics: one per field, union alternatives merged."""
        skip = set(skip_missing)
        merged: dict[str, tuple[list[str], Any]] = {}
        for err in exc.errors(include_url=False):
            kind = err["type"]
            parts = _clean_loc(tuple(err["loc"]), data, kind)
            where = _path_text(parts)
            last = str(parts[-1]) if parts else ""
            if kind == "missing":
                if len(parts) == 1 and last in skip:
                    continue
                sink.add(f"missing required field '{last}'", address, where, file=file)
            elif kind == "extra_forbidden":
                hint = did_you_mean(last, _fields_at(model, parts[:-1]))
                sink.add(f"unknown field '{last}'", address, where, hint, file=file)
            else:
                msg = str(err["msg"])
                for prefix in ("Value error, ", "Assertion failed, "):
                    msg = msg.removeprefix(prefix)
                msg = msg[:1].lower() + msg[1:]
                msg = _INSTANCE_OF.sub("", msg)  # "or instance of Constraint": not TOML's words
                if kind == "value_error" and "found" in msg:
                    msg = _redact(msg, self.secrets)
                    sink.add(msg, address, where, file=file)
                    continue
                msgs, _ = merged.setdefault(where, ([], err.get("input")))
                if msg not in msgs:
                    msgs.append(msg)
        for where, (msgs, found) in merged.items():
            sink.add(
                f"{_join_alternatives(msgs)}, found {self.show(found)}", address, where, file=file
            )

    def validate_model(
        self,
        model: type[BaseModel],
        data: Any,
        sink: _Sink,
        address: str,
        skip_missing: Iterable[str] = (),
        file: str | None = None,
    ) -> Any:
        """model.model_validate, or None with the errors reported."""
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            self.pydantic_diagnostics(exc, data, model, sink, address, skip_missing, file)
            return None
        except Exception as exc:  # a provider's validator that raised TypeError & co.
            sink.add(
                f"cannot validate: {type(exc).__name__}: {_redact(str(exc), self.secrets)}",
                address,
                hint=f"{model.__module__}.{model.__qualname__} should raise ValueError",
                file=file,
            )
            return None

    def check_name(self, name: str, address: str) -> bool:
        if NAME.fullmatch(name):
            return True
        shown = json.dumps(name, ensure_ascii=False)
        self.report.add(f"invalid name {shown}: expected {_NAME_RULE}", address)
        return False

    def check_table(self, raw: Any, address: str, what: str) -> bool:
        if isinstance(raw, dict):
            return True
        self.report.add(f"expected a table ({what}), found {self.show(raw)}", address)
        return False

    # -- file -------------------------------------------------------------------------------

    def read_toml(self) -> dict[str, Any] | None:
        try:
            text = limits.read_text(self.path)
        except FileNotFoundError:
            self.report.add("stack file not found")
            return None
        except limits.InputError as exc:
            self.report.add(str(exc).replace("the file", "the stack file", 1))
            return None
        try:
            return limits.parse_toml(text)
        except tomllib.TOMLDecodeError as exc:
            self.report.add(_toml_error_message(str(exc), text))
            return None
        except limits.InputError as exc:
            self.report.add(str(exc))
            return None

    # -- parameters -------------------------------------------------------------------------

    def load_parameters(
        self, raw: dict[str, Any], assignments: Sequence[str], env_files: Sequence[Path]
    ) -> None:
        for name, definition in raw.items():
            address = f"parameters.{name}"
            self.param_names.add(name)
            if isinstance(definition, dict) and definition.get("hidden") is True:
                self.hidden_names.add(name)
                self.secrets.update(_string_forms(definition.get("default")))
            if not self.check_name(name, address) or not self.check_table(
                definition, address, 'type = "string", default = ...'
            ):
                continue
            pdef = self.validate_model(ParameterDef, definition, self.report, address)
            if pdef is None:
                continue
            ok = True
            if pdef.has_default:
                problem = _type_problem(pdef.default, pdef.type)
                if problem:
                    self.report.add(f"bad default: {problem}", address, "default")
                    ok = False
            for i, c in enumerate(pdef.constraints):
                if pdef.type not in _APPLIES_TO[c.kind]:
                    applies = " or ".join(_APPLIES_TO[c.kind])
                    self.report.add(
                        f"a {c.kind} constraint applies to {applies} parameters, not {pdef.type}",
                        address,
                        f"constraints[{i}]",
                    )
                    ok = False
            if ok:
                self.param_defs[name] = pdef
                if pdef.has_default:
                    self.values[name] = pdef.default

        for env in env_files:
            self.load_env_file(env)
        for text in assignments:
            self.assign(text)

        for name, pdef in self.param_defs.items():
            address = f"parameters.{name}"
            if name in self.failed:
                continue
            if name not in self.values:
                self.report.add(
                    f"parameter '{name}' has no default and no value was given",
                    address,
                    hint=f"pass -p {name}=VALUE or set it in an environment file (-e)",
                )
                continue
            value = self.values[name]
            for i, c in enumerate(pdef.constraints):
                problem = _constraint_problem(value, c, pdef.hidden)
                if problem:
                    detail = c.description or problem
                    shown = REDACTED if pdef.hidden else _render(value)
                    self.report.add(
                        f"parameter '{name}': value {shown} violates {_constraint_text(c)}: "
                        f"{detail}",
                        address,
                        f"constraints[{i}]",
                    )
                    self.failed.add(name)
            if name in self.failed:
                del self.values[name]  # no cascade of errors where it is used

    def load_env_file(self, env: Path) -> None:
        efile = str(env)
        text: str | None = None
        try:
            text = limits.read_text(env)
            data = limits.parse_toml(text)
        except FileNotFoundError:
            self.report.add("environment file not found", file=efile)
            return
        except limits.InputError as exc:
            self.report.add(str(exc).replace("the file", "the environment file", 1), file=efile)
            return
        except tomllib.TOMLDecodeError as exc:
            self.report.add(_toml_error_message(str(exc), text), file=efile)
            return
        if isinstance(data.get("parameters"), dict):
            for name in self.hidden_names & set(data["parameters"]):
                self.secrets.update(_string_forms(data["parameters"][name]))
        envdef = self.validate_model(EnvFile, data, self.report, "", file=efile)
        if envdef is None:
            return
        for name, value in envdef.parameters.items():
            address = f"parameters.{name}"
            if name not in self.param_names:
                hint = did_you_mean(name, self.param_names)
                self.report.add(f"unknown parameter '{name}'", address, hint=hint, file=efile)
                continue
            pdef = self.param_defs.get(name)
            if pdef is None:  # its definition is broken and already reported
                continue
            problem = _type_problem(value, pdef.type)
            if problem:
                self.report.add(f"parameter '{name}': {problem}", address, file=efile)
                self.failed.add(name)
                self.values.pop(name, None)
                continue
            self.failed.discard(name)
            self.values[name] = value

    def assign(self, text: str) -> None:
        try:
            name, raw = parse_param_assignment(text)
        except UserError as exc:
            self.report.extend(
                Diagnostic(d.message, self.file, "parameters", None, d.hint)
                for d in exc.diagnostics
            )
            return
        address = f"parameters.{name}"
        if name in self.hidden_names:
            self.secrets.update(s for s in (raw, *raw.split(",")) if s)
        if name not in self.param_names:
            hint = did_you_mean(name, self.param_names)
            self.report.add(f"-p {name}: unknown parameter '{name}'", address, hint=hint)
            return
        pdef = self.param_defs.get(name)
        if pdef is None:
            return
        try:
            value = convert_param(raw, pdef.type)
        except ValueError as exc:
            shown = REDACTED if pdef.hidden else _render(raw)
            self.report.add(f"-p {name}: {exc}, found {shown}", address)
            self.failed.add(name)
            self.values.pop(name, None)
            return
        if pdef.hidden:
            self.secrets.update(_string_forms(value))
        self.failed.discard(name)
        self.values[name] = value

    # -- expressions ------------------------------------------------------------------------

    def prepare(self, raw: Any, where: str, sink: _Sink, address: str) -> Any:
        """Parse a raw value into expression nodes, substitute parameters and evaluate what is
        fully known; BROKEN when that failed (reported)."""
        try:
            parsed = ex.parse(raw, where)
        except ex.ExpressionError as exc:
            sink.add(_redact(str(exc), self.secrets), address, exc.path or where)
            return BROKEN
        before = sink.count
        value = self.static(parsed, sink, address, where)
        return BROKEN if sink.count > before else value

    def static(self, value: Any, sink: _Sink, address: str, where: str) -> Any:
        if isinstance(value, ex.GetParam):
            return self.param_value(value, sink, address, where)
        if isinstance(value, (ex.StrReplace, ex.ListJoin)):
            if isinstance(value, ex.StrReplace):
                node: Any = ex.StrReplace(
                    self.static(value.template, sink, address, where),
                    self.static(value.params, sink, address, where),
                )
            else:
                node = ex.ListJoin(
                    self.static(value.delimiter, sink, address, where),
                    tuple(self.static(v, sink, address, where) for v in value.lists),
                )
            parts = (
                (node.template, node.params)
                if isinstance(node, ex.StrReplace)
                else (node.delimiter, node.lists)
            )
            if _has_expr(parts):  # needs a resource: the executor finishes it
                return node
            try:
                return ex.evaluate(node, ex.Resolver())
            except ex.ExpressionError as exc:
                sink.add(_redact(str(exc), self.secrets), address, where)
                return node
        if isinstance(value, dict):
            return {
                k: self.static(v, sink, address, f"{where}.{k}" if where else str(k))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.static(v, sink, address, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    def param_value(self, node: ex.GetParam, sink: _Sink, address: str, where: str) -> Any:
        if node.name not in self.param_names:
            hint = did_you_mean(node.name, self.param_names)
            sink.add(f"get_param: unknown parameter '{node.name}'", address, where, hint)
            return node
        if node.name not in self.values:  # missing or invalid: reported with the parameter
            return node
        value = self.values[node.name]
        for key in node.path:
            try:
                value = value[key]
            except (KeyError, IndexError, TypeError):
                sink.add(
                    f"get_param: parameter '{node.name}' has no key {_render(key)}",
                    address,
                    where,
                )
                return node
        return value

    def references(
        self,
        value: Any,
        sink: _Sink,
        address: str,
        where: str,
        owner: str | None,
        check_index: bool = True,
    ) -> AbstractSet[str]:
        """Check every get_resource / get_attr in a value; the addresses they depend on. Not
        to be changed in place: a whole-group reference is the group's one shared set."""
        found = [
            self.target(
                node.name,
                node.index,
                node.attribute if isinstance(node, ex.GetAttr) else None,
                sink,
                address,
                at,
                owner,
                check_index,
            )
            for node, at in _references(value, where)
        ]
        if len(found) == 1:
            return found[0]
        return set().union(*found)

    def target(
        self,
        name: str,
        index: int | None,
        attribute: str | None,
        sink: _Sink,
        address: str,
        where: str,
        owner: str | None,
        check_index: bool = True,
    ) -> AbstractSet[str]:
        """Check one reference; check_index is off for a resource with no instances, whose
        data[%index%] has no real index to check."""
        target = self.targets.get(name)
        if target is None:
            hint = did_you_mean(name, self.targets)
            sink.add(f"reference to unknown resource '{name}'", address, where, hint)
            return set()
        if owner is not None:
            self.name_edges.add((name, owner))
        if attribute is not None and target.type_cls is not None:
            attributes = target.type_cls.attributes
            if attribute not in attributes:
                hint = did_you_mean(attribute, attributes) or (
                    f"'{target.type_cls.type_name}' has: {', '.join(attributes)}"
                )
                sink.add(
                    f"resource '{name}' (type '{target.type_cls.type_name}') has no attribute "
                    f"'{attribute}'",
                    address,
                    where,
                    hint,
                )
        if index is None:
            if not target.counted:
                return {name}
            if name not in self.group_sets:
                self.group_sets[name] = frozenset(target.addresses)
            return self.group_sets[name]
        if not target.counted:
            sink.add(
                f"'{name}[{index}]': resource '{name}' has no count, so it cannot be indexed",
                address,
                where,
                hint=f"write '{name}'",
            )
            return set()
        if check_index and target.count is not None and index >= target.count:
            last = f"indices 0 to {target.count - 1}" if target.count else "it has no instances"
            sink.add(
                f"index {index} is out of range: '{name}' has count {target.count} ({last})",
                address,
                where,
            )
            return set()
        return {f"{name}[{index}]"}

    def explicit_dependency(
        self, text: str, sink: _Sink, address: str, where: str, owner: str, check_index: bool = True
    ) -> AbstractSet[str]:
        try:
            name, index = ex.parse_address(text)
        except ex.ExpressionError as exc:
            sink.add(str(exc), address, where)
            return set()
        return self.target(name, index, None, sink, address, where, owner, check_index)

    # -- resources --------------------------------------------------------------------------

    def declare_resources(self, raw: dict[str, Any]) -> None:
        """First pass: names, types and counts, so references can be checked in any order."""
        for name, definition in raw.items():
            address = f"resources.{name}"
            self.names.append(name)
            if not self.check_name(name, address):
                continue
            if not self.check_table(definition, address, 'type = "...", then its properties'):
                self.targets[name] = _Target(name, None, counted=False, count=None)
                continue
            rdef = self.validate_model(ResourceDef, definition, self.report, address)
            type_name = definition.get("type")
            type_cls = self.registry.types.get(type_name) if isinstance(type_name, str) else None
            if type_cls is None and isinstance(type_name, str):
                hint = did_you_mean(type_name, self.registry.types)
                if hint is None and self.registry.load_errors:
                    hint = "; ".join(d.message for d in self.registry.load_errors)
                if hint is None:
                    hint = "known types: " + ", ".join(sorted(self.registry.types))
                self.report.add(f"unknown resource type '{type_name}'", address, "type", hint)
            if rdef is None:
                counted = "count" in definition
                self.targets[name] = _Target(name, type_cls, counted=counted, count=None)
                continue
            counted = rdef.count is not None
            count = self.evaluate_count(rdef.count, address) if counted else None
            instances = count if counted and count is not None else 1
            if self.instance_total + instances > limits.MAX_RESOURCES:
                if self.instance_total <= limits.MAX_RESOURCES:  # said once, where it happens
                    self.report.add(
                        f"the stack would have {self.instance_total + instances:,} resources "
                        f"with this one's instances, more than the limit of "
                        f"{limits.MAX_RESOURCES:,}",
                        address,
                        "count" if counted else None,
                    )
                count = None  # no instances made: the rest of the stack is still checked
            self.instance_total += instances
            target = _Target(name, type_cls, counted, count)
            if counted and count is not None:
                target.addresses = [f"{name}[{i}]" for i in range(count)]
            self.targets[name] = target
            self.resources.append(_Resource(name, rdef, type_cls))

    def evaluate_count(self, raw: Any, address: str) -> int | None:
        value = raw
        if isinstance(raw, dict):
            value = self.prepare(raw, "count", self.report, address)
            if value is BROKEN or isinstance(value, ex.GetParam):
                return None  # reported, here or with the parameter
            if _has_expr(value):
                self.report.add(
                    "count must be known before anything is created: an integer or "
                    "{ get_param = ... }, not a reference to a resource",
                    address,
                    "count",
                )
                return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            self.report.add(f"count must be an integer, found {self.show(value)}", address, "count")
            return None
        if not 0 <= value <= MAX_COUNT:
            self.report.add(
                f"count must be between 0 and {MAX_COUNT}, found {self.show(value)}",
                address,
                "count",
            )
            return None
        return value

    def expand_resource(self, res: _Resource) -> list[ResourceConfig]:
        """Second pass for one resource: fields, references, inputs; one config per instance."""
        name, rdef, type_cls = res.name, res.definition, res.type_cls
        group = f"resources.{name}"
        target = self.targets[name]
        model = type_cls.Inputs if type_cls is not None else None
        known = _field_set(model) if model is not None else None

        order: list[str] = []
        shared_raw: dict[str, Any] = {}
        varying_raw: dict[str, Any] = {}
        for key, value in rdef.properties.items():
            if known is not None and key not in known:
                self.unknown_field(key, rdef.type, known, group)
                continue
            if _plain(value):  # most values: no functions, nothing to scan
                index_at = key if INDEX_TOKEN in str(value) else None
            else:
                index_at, near_misses = _scan(value, key)
                for where, fn, suggestion in near_misses:
                    self.report.add(
                        f"unknown function '{fn}'", group, where, f"did you mean '{suggestion}'?"
                    )
            if index_at is not None and not target.counted:
                self.report.add(
                    f"{INDEX_TOKEN} is only replaced in a counted resource",
                    group,
                    index_at,
                    hint="add count = N, or remove %index%",
                )
                continue
            order.append(key)
            (varying_raw if index_at is not None else shared_raw)[key] = value

        shared_deps_raw: list[tuple[int, str]] = []
        varying_deps_raw: list[tuple[int, str]] = []
        for i, dep in enumerate(rdef.depends_on):
            if INDEX_TOKEN not in dep:
                shared_deps_raw.append((i, dep))
            elif target.counted:
                varying_deps_raw.append((i, dep))
            else:
                self.report.add(
                    f"{INDEX_TOKEN} is only replaced in a counted resource",
                    group,
                    f"depends_on[{i}]",
                    hint="add count = N, or remove %index%",
                )

        # what does not mention %index% is the same for every instance: done once
        shared: dict[str, Any] = {}
        unresolved: set[str] = set()  # broken, or holding references: left out of validation
        shared_deps: set[str] = set()
        for key, value in shared_raw.items():
            if _plain(value):
                shared[key] = value
                continue
            prepared = self.prepare(value, key, self.report, group)
            if prepared is BROKEN:
                unresolved.add(key)
                continue
            shared[key] = prepared
            if _has_expr(prepared):
                unresolved.add(key)
                shared_deps |= self.references(prepared, self.report, group, key, name)
        for i, dep in shared_deps_raw:
            shared_deps |= self.explicit_dependency(
                dep, self.report, group, f"depends_on[{i}]", name
            )

        if not target.counted:
            indices: list[int | None] = [None]
        elif target.count:
            indices = list(range(target.count))
        else:
            # no instances (or an unusable count): still check the definition, as index 0
            indices = [0]
        emit = not target.counted or bool(target.count)

        sink: _Sink = _GroupSink(self.file, group) if target.counted else self.report
        # one tuple for every instance that adds nothing of its own: a whole-group reference
        # (N addresses) is then sorted and stored once, not once per instance
        shared_deps_sorted = tuple(sorted(shared_deps))
        last_extra: AbstractSet[str] = frozenset()
        last_sorted = shared_deps_sorted
        configs: list[ResourceConfig] = []
        provider = self.registry.provider_of.get(rdef.type, "")
        if model is not None and not varying_raw:  # identical instances: validate once
            self.check_inputs(model, shared, unresolved, sink, group)
        for index in indices:
            if self.dependencies_over:
                break  # the stack fails on its size: nothing more is built for it
            address = name if index is None else f"{name}[{index}]"
            where_address = f"resources.{address}" if emit else group
            extra: set[str] = set()  # what this instance depends on beyond the shared deps
            properties = shared
            if varying_raw or varying_deps_raw:
                assert index is not None
                properties = dict(shared)
                instance_unresolved = set(unresolved)
                for key, value in varying_raw.items():
                    prepared = self.prepare(
                        ex.substitute_index(value, index), key, sink, where_address
                    )
                    if prepared is BROKEN:
                        instance_unresolved.add(key)
                        continue
                    properties[key] = prepared
                    if _has_expr(prepared):
                        instance_unresolved.add(key)
                        if not self.dependencies_over:
                            extra |= self.references(prepared, sink, where_address, key, name, emit)
                for i, dep in varying_deps_raw:
                    extra |= self.explicit_dependency(
                        dep.replace(INDEX_TOKEN, str(index)),
                        sink,
                        where_address,
                        f"depends_on[{i}]",
                        name,
                        emit,
                    )
                if model is not None and varying_raw:
                    self.check_inputs(model, properties, instance_unresolved, sink, where_address)
            if emit and not self.dependencies_over:
                own = len(shared_deps) + len(extra)
                if extra and not extra.isdisjoint(shared_deps):
                    own = len(shared_deps | extra)
                self.dependency_total += own
                if self.dependency_total > limits.MAX_DEPENDENCIES:
                    self.dependencies_over = True
                    self.report.add(
                        f"the stack's resources would have more than "
                        f"{limits.MAX_DEPENDENCIES:,} dependencies: '{address}' depends on "
                        f"{own:,} others",
                        group,
                        hint="a reference to a whole counted group from each instance of "
                        "another makes count x count dependencies: refer to one instance "
                        "('name[%index%]'), or make the counts smaller",
                    )
            if self.dependencies_over:
                break
            # instances whose own references name the same addresses (a whole group inside a
            # %index% template) share one tuple too
            if extra <= shared_deps:
                deps_sorted = shared_deps_sorted
            elif extra != last_extra:
                last_extra, last_sorted = extra, tuple(sorted(shared_deps | extra))
                deps_sorted = last_sorted
            else:
                deps_sorted = last_sorted
            if emit:
                configs.append(
                    ResourceConfig(
                        address=address,
                        name=name,
                        index=index,
                        type=rdef.type,
                        provider=provider,
                        # one dict per instance; nested values of shared fields are shared
                        properties={k: properties[k] for k in order if k in properties},
                        depends_on=deps_sorted,
                    )
                )
        if isinstance(sink, _GroupSink):
            sink.flush_into(self.report)
        return configs

    def unknown_field(self, key: str, type_name: str, known: Iterable[str], address: str) -> None:
        if key == "properties":
            hint = "properties go directly in the resource table, not under 'properties'"
        else:
            hint = did_you_mean(key, [*known, *RESOURCE_KEYS])
        self.report.add(f"unknown field '{key}' for type '{type_name}'", address, key, hint)

    def check_inputs(
        self,
        model: type[BaseModel],
        properties: dict[str, Any],
        unresolved: set[str],
        sink: _Sink,
        address: str,
    ) -> None:
        """Validate what is known now: fields that still hold a reference are left out (their
        value exists only after apply), and their absence is not an error."""
        data = {k: v for k, v in properties.items() if k not in unresolved}
        self.validate_model(model, data, sink, address, skip_missing=unresolved)

    # -- outputs and providers --------------------------------------------------------------

    def load_outputs(self, raw: dict[str, Any]) -> dict[str, OutputConfig]:
        outputs: dict[str, OutputConfig] = {}
        for name, definition in raw.items():
            address = f"outputs.{name}"
            if not self.check_name(name, address) or not self.check_table(
                definition, address, "value = ..."
            ):
                continue
            odef = self.validate_model(OutputDef, definition, self.report, address)
            if "value" not in definition:
                continue
            # the value is checked even when other keys are wrong: report everything at once
            _, near_misses = _scan(definition["value"], "value")
            for where, fn, suggestion in near_misses:
                self.report.add(
                    f"unknown function '{fn}'", address, where, f"did you mean '{suggestion}'?"
                )
            value = self.prepare(definition["value"], "value", self.report, address)
            if value is BROKEN:
                continue
            self.references(value, self.report, address, "value", owner=None)
            if odef is not None:
                outputs[name] = OutputConfig(name, value, odef.description, odef.sensitive)
        return outputs

    def load_providers(self, raw: dict[str, Any]) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        for name, table in raw.items():
            address = f"provider.{name}"
            cls = self.registry.providers.get(name)
            if cls is None:
                hint = did_you_mean(name, self.registry.providers) or (
                    "installed providers: " + ", ".join(sorted(self.registry.providers))
                )
                self.report.add(f"unknown provider '{name}'", address, hint=hint)
                continue
            if not self.check_table(table, address, "the provider's settings"):
                continue
            data: dict[str, Any] = {}
            for key, value in table.items():
                prepared = self.prepare(value, key, self.report, address)
                if prepared is BROKEN:
                    continue
                if _has_expr(prepared):
                    self.report.add(
                        "provider settings can use get_param, but not resources",
                        address,
                        key,
                    )
                    continue
                data[key] = prepared
            instance = self.validate_model(cls.Settings, data, self.report, address)
            if instance is not None:
                settings[name] = instance
        return settings

    def cross_check(self, resources: dict[str, ResourceConfig]) -> None:
        """Each provider's checks of its resources against each other (a port's address
        against its network's subnet), once, on the resolved configuration."""
        groups: dict[str, dict[str, ResourceConfig]] = {}
        for address, rc in resources.items():
            if rc.provider:
                groups.setdefault(rc.provider, {})[address] = rc
        for name, group in groups.items():
            try:
                found = self.registry.providers[name].validate_stack(group)
            except Exception as exc:  # a provider's bug must not become a traceback
                self.report.add(
                    f"provider '{name}' failed to check the stack: {type(exc).__name__}: {exc}",
                    hint="a bug in the provider: please report it",
                )
                continue
            # a counted resource's problems merged as its own fields' are: a port counted
            # 10,000 times with one ip is one diagnostic, not 9,999 lines
            group_sinks: dict[str, _GroupSink] = {}
            for d in found:
                where = f"resources.{d.address}" if d.address else None
                group = (d.address or "").split("[", 1)[0]
                target = self.targets.get(group)
                sink: _Sink = self.report
                if where is not None and target is not None and target.counted:
                    if group not in group_sinks:
                        group_sinks[group] = _GroupSink(self.file, f"resources.{group}")
                    sink = group_sinks[group]
                sink.add(d.message, where, d.field, d.hint)
            for group_sink in group_sinks.values():
                group_sink.flush_into(self.report)

    # -- the whole file ---------------------------------------------------------------------

    def load(self, assignments: Sequence[str], env_files: Sequence[Path]) -> StackConfig:
        doc = self.read_toml()
        if doc is None:
            self.fail()
        assert doc is not None
        top = self.validate_model(StackFile, doc, self.report, "")
        for key in _SECTIONS:
            if isinstance(doc.get(key), dict):
                self.positions.update(((key, n), i) for i, n in enumerate(doc[key]))

        def section(key: str) -> dict[str, Any]:
            # a malformed top level is reported above; its well-formed sections still get checked
            value = getattr(top, key) if top is not None else doc.get(key, {})
            return value if isinstance(value, dict) else {}

        name = top.name if top is not None else doc.get("name")
        if not isinstance(name, str) or not STACK_NAME.fullmatch(name):
            name = None  # reported by StackFile
        if name is None and "name" not in doc and not STACK_NAME.fullmatch(self.path.stem):
            self.report.add(
                f"the file name {json.dumps(self.path.stem)} is not a valid stack name",
                field="name",
                hint='set name = "..." in the file: letters, digits, "_" or "-"',
            )
        description = top.description if top is not None else ""

        self.load_parameters(section("parameters"), assignments, env_files)
        self.declare_resources(section("resources"))
        resources: dict[str, ResourceConfig] = {}
        groups: dict[str, list[str]] = {}
        for res in self.resources:
            for rc in self.expand_resource(res):
                resources[rc.address] = rc
            if self.targets[res.name].counted:
                groups[res.name] = self.targets[res.name].addresses
        self.cross_check(resources)
        outputs = self.load_outputs(section("outputs"))
        provider_settings = self.load_providers(section("provider"))
        name_graph = nx.DiGraph()
        name_graph.add_nodes_from(self.names)
        name_graph.add_edges_from(self.name_edges)
        self.report.extend(cycle_diagnostics(name_graph, self.file))
        if self.report.items:
            self.fail()

        hidden_values = sorted(
            {
                s
                for n in self.hidden_names
                if n in self.values
                for s in _string_forms(self.values[n])
            },
            key=lambda s: (-len(s), s),
        )
        return StackConfig(
            name=name or self.path.stem,
            file=self.path,
            description=description,
            parameters=dict(self.values),
            hidden_values=hidden_values,
            resources=resources,
            groups=groups,
            outputs=outputs,
            provider_settings=provider_settings,
        )

    def sort_key(self, position: int, d: Diagnostic) -> tuple[int, int, int]:
        """File order: top level, then parameters, resources, outputs and providers, each
        entry's problems together."""
        section, _, rest = (d.address or "").partition(".")
        name = rest.split("[", 1)[0]
        return (_SECTIONS.get(section, 0), self.positions.get((section, name), 0), position)

    def fail(self) -> typing.NoReturn:
        # last line of defence: a hidden value that slipped into a message through an
        # evaluation error; very short values are left alone (they would blank out numbers)
        diagnostics = [
            Diagnostic(
                _redact(d.message, self.secrets, 3),
                d.file,
                d.address,
                d.field,
                _redact(d.hint, self.secrets, 3) if d.hint else d.hint,
            )
            for d in self.report.items
        ]
        order = sorted(range(len(diagnostics)), key=lambda i: self.sort_key(i, diagnostics[i]))
        raise UserError([diagnostics[i] for i in order])


def _toml_error_message(message: str, text: str | None) -> str:
    """tomllib's message with its line and column, made specific where it is vague."""
    m = re.match(r"Cannot declare \((.*)\) twice", message)
    position = _TOML_POSITION.search(message)
    at = f" (line {position.group(1)}, column {position.group(2)})" if position else ""
    if m:
        keys = re.findall(r"'((?:[^'\\]|\\.)*)'", m.group(1))
        if len(keys) == 2 and keys[0] in ("resources", "parameters", "outputs", "provider"):
            kind = {"resources": "resource", "parameters": "parameter", "outputs": "output"}
            return f"duplicate {kind.get(keys[0], 'provider')} '{keys[1]}'{at}"
        return f"duplicate table [{'.'.join(keys)}]{at}"
    if message.startswith("Cannot overwrite a value") and position and text is not None:
        lines = text.splitlines()
        line_no = int(position.group(1))
        if 0 < line_no <= len(lines):
            key = _TOML_KEY.match(lines[line_no - 1])
            table = next(
                (
                    t.group(1)
                    for ln in reversed(lines[: line_no - 1])
                    if (t := _TOML_TABLE.match(ln))
                ),
                None,
            )
            if key:
                inside = f" in [{table}]" if table else ""
                return f"duplicate key '{key.group(1)}'{inside}{at}"
    return f"invalid TOML: {message}"


def load_stack(
    path: Path,
    registry: Registry,
    params: Sequence[str] = (),
    env_files: Sequence[Path] = (),
) -> StackConfig:
    """Load and validate a stack file with its parameters (defaults < env files < -p).
    Raises UserError listing every problem found; nothing else escapes for bad input."""
    with _gc_paused():
        return _Loader(Path(path), registry).load(params, env_files)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Loading allocates many small containers and no cycles: the cyclic collector would
    rescan the growing heap again and again (measured: half the load time of 10,000 resources)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


__all__ = ["convert_param", "load_stack", "parse_param_assignment"]
