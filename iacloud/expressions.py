"""Heat's intrinsic functions: parsing one-key tables into expression nodes, and evaluating them.

`get_param` is evaluated at load time (parameters are known then); `get_resource` and `get_attr`
may only be known once the referenced resource exists, so evaluation returns `Unknown` holding the
partly evaluated expression, and the executor evaluates it again when its dependencies are done.

Heat's other functions (`repeat`, `map_merge`, `equals`, `if`, ...) are `Call` nodes whose
meaning lives in `iacloud.functions`: pure functions of their evaluated arguments, shared by TOML
stacks and HOT templates. `if` is lazy: only the branch its condition picks is evaluated, and
its two-argument form (HOT 2021-04-16) elides the enclosing item (`ELIDED`) when false.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from iacloud import functions as fn

BASIC_FUNCTIONS = ("get_param", "get_resource", "get_attr", "str_replace", "list_join")
FUNCTIONS = (*BASIC_FUNCTIONS, *fn.CALLS)
_ADDRESS = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_-]*)(?:\[(?P<index>\d+)\])?")


class ExpressionError(ValueError):
    """A malformed intrinsic function; the message says what was expected and what was found.
    `path` is the field path inside the value where it sits."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class GetParam:
    name: str
    path: tuple[str | int, ...] = ()


@dataclass(frozen=True)
class GetResource:
    name: str
    index: int | None = None

    @property
    def address(self) -> str:
        return self.name if self.index is None else f"{self.name}[{self.index}]"


@dataclass(frozen=True)
class GetAttr:
    name: str
    index: int | None
    attribute: str
    path: tuple[str | int, ...] = ()

    @property
    def address(self) -> str:
        return self.name if self.index is None else f"{self.name}[{self.index}]"


@dataclass(frozen=True)
class StrReplace:
    template: Any
    params: Any


@dataclass(frozen=True)
class ListJoin:
    delimiter: Any
    lists: tuple[Any, ...]


@dataclass(frozen=True)
class Call:
    """One of Heat's pure functions (iacloud.functions.CALLS) with its parsed arguments."""

    name: str
    args: Any


class _Elided:
    """What a two-argument `if` whose condition is false leaves: the enclosing item goes."""

    def __repr__(self) -> str:
        return "ELIDED"


ELIDED = _Elided()

Expr = GetParam | GetResource | GetAttr | StrReplace | ListJoin | Call
EXPR_TYPES = (GetParam, GetResource, GetAttr, StrReplace, ListJoin, Call)


@dataclass(frozen=True)
class Unknown:
    """A value known only after apply; `expr` is the remaining expression."""

    expr: Any

    def describe(self) -> str:
        return f"(known after apply: {describe(self.expr)})"


def parse_address(text: str) -> tuple[str, int | None]:
    m = _ADDRESS.fullmatch(text) if isinstance(text, str) else None
    if not m:
        raise ExpressionError(f"expected a resource name such as 'web' or 'web[0]', found {text!r}")
    index = m.group("index")
    return m.group("name"), (int(index) if index is not None else None)


def parse(value: Any, path: str = "") -> Any:
    """Turn one-key tables naming an intrinsic function into expression nodes, recursively."""
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key in FUNCTIONS:
                try:
                    return _parse_function(key, arg, path)
                except ExpressionError as exc:
                    raise ExpressionError(str(exc), exc.path or path) from None
        return {k: parse(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [parse(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _parse_function(key: str, arg: Any, path: str) -> Expr:
    if key == "get_param":
        if isinstance(arg, str):
            return GetParam(arg)
        if isinstance(arg, list) and arg and isinstance(arg[0], str):
            return GetParam(arg[0], tuple(arg[1:]))
        raise ExpressionError(f"get_param expects a parameter name, found {arg!r}", path)
    if key == "get_resource":
        if not isinstance(arg, str):
            raise ExpressionError(f"get_resource expects a resource name, found {arg!r}", path)
        return GetResource(*parse_address(arg))
    if key == "get_attr":
        if not (
            isinstance(arg, list) and len(arg) >= 2 and all(isinstance(a, str) for a in arg[:2])
        ):
            raise ExpressionError(
                f"get_attr expects [resource, attribute, key...], found {arg!r}", path
            )
        name, index = parse_address(arg[0])
        return GetAttr(name, index, arg[1], tuple(arg[2:]))
    if key == "str_replace":
        if not (isinstance(arg, dict) and set(arg) == {"template", "params"}):
            raise ExpressionError(
                f"str_replace expects {{ template = ..., params = {{ ... }} }}, found {arg!r}", path
            )
        return StrReplace(parse(arg["template"], path), parse(arg["params"], path))
    if key in fn.CALLS:
        try:
            fn.check_shape(key, arg)
        except fn.FunctionError as exc:
            raise ExpressionError(str(exc), path) from None
        return Call(key, parse(arg, path))
    # list_join
    if not (isinstance(arg, list) and len(arg) >= 2):
        raise ExpressionError(f"list_join expects [delimiter, [items...]], found {arg!r}", path)
    return ListJoin(parse(arg[0], path), tuple(parse(a, path) for a in arg[1:]))


def walk(value: Any) -> Iterator[Expr]:
    """Every expression node inside a value, outermost first."""
    if isinstance(value, EXPR_TYPES):
        yield value
        if isinstance(value, StrReplace):
            yield from walk(value.template)
            yield from walk(value.params)
        elif isinstance(value, ListJoin):
            yield from walk(value.delimiter)
            for item in value.lists:
                yield from walk(item)
        elif isinstance(value, Call):
            yield from walk(value.args)
    elif isinstance(value, Unknown):
        yield from walk(value.expr)
    elif isinstance(value, dict):
        for v in value.values():
            yield from walk(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from walk(v)


def has_unknown(value: Any) -> bool:
    if isinstance(value, Unknown):
        return True
    if isinstance(value, dict):
        return any(has_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(has_unknown(v) for v in value)
    return False


class Resolver:
    """What evaluation asks of the world. Subclasses answer from config, state and results."""

    def param(self, name: str) -> Any:
        raise KeyError(name)

    def instances(self, name: str) -> list[str] | None:
        """The addresses of a counted resource, or None when `name` is not counted."""
        return None

    def resource_id(self, address: str) -> Any:
        """The id of a resource, or Unknown."""
        raise KeyError(address)

    def attribute(self, address: str, attribute: str) -> Any:
        """An attribute of a resource, or Unknown."""
        raise KeyError(address)


def evaluate(value: Any, resolver: Resolver) -> Any:
    """Evaluate every expression node; what cannot be known yet becomes Unknown."""
    if isinstance(value, Unknown):
        return evaluate(value.expr, resolver)
    if isinstance(value, EXPR_TYPES):
        return _evaluate_expr(value, resolver)
    if isinstance(value, dict):
        out = {k: evaluate(v, resolver) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not ELIDED}
    if isinstance(value, list):
        return [v for v in (evaluate(v, resolver) for v in value) if v is not ELIDED]
    return value


def _evaluate_call(call: Call, resolver: Resolver) -> Any:
    if call.name == "if":
        condition = evaluate(call.args[0], resolver)
        if has_unknown(condition):
            return Unknown(Call("if", [condition, *call.args[1:]]))
        if not isinstance(condition, bool):
            raise ExpressionError(f"if: the condition must be true or false, found {condition!r}")
        if condition:
            return evaluate(call.args[1], resolver)
        return evaluate(call.args[2], resolver) if len(call.args) > 2 else ELIDED
    args = evaluate(call.args, resolver)
    if has_unknown(args):
        return Unknown(Call(call.name, args))
    try:
        return fn.apply(call.name, args)
    except fn.FunctionError as exc:
        raise ExpressionError(str(exc)) from None


def _select(value: Any, path: tuple[str | int, ...], what: str) -> Any:
    for key in path:
        if isinstance(value, Unknown):
            return value
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            raise ExpressionError(f"{what} has no key {key!r}") from None
    return value


def _per_instance(
    name: str, index: int | None, resolver: Resolver, fn: Callable[[str], Any]
) -> Any:
    group = resolver.instances(name) if index is None else None
    if group is None:
        return fn(name if index is None else f"{name}[{index}]")
    values = []
    for address in group:
        value = fn(address)
        if isinstance(value, Unknown):  # the whole reference is unknown: stop at the first
            return value
        values.append(value)
    return values


def _evaluate_expr(expr: Expr, resolver: Resolver) -> Any:
    if isinstance(expr, GetParam):
        return _select(resolver.param(expr.name), expr.path, f"parameter '{expr.name}'")
    if isinstance(expr, GetResource):
        value = _per_instance(expr.name, expr.index, resolver, resolver.resource_id)
        return Unknown(expr) if has_unknown(value) else value
    if isinstance(expr, GetAttr):
        what = f"attribute '{expr.attribute}' of '{expr.address}'"
        value = _per_instance(
            expr.name,
            expr.index,
            resolver,
            lambda a: _select(resolver.attribute(a, expr.attribute), expr.path, what),
        )
        return Unknown(expr) if has_unknown(value) else value
    if isinstance(expr, Call):
        return _evaluate_call(expr, resolver)
    if isinstance(expr, StrReplace):
        template = evaluate(expr.template, resolver)
        params = evaluate(expr.params, resolver)
        if has_unknown(template) or has_unknown(params):
            return Unknown(StrReplace(template, params))
        try:
            return fn.str_replace(template, params)
        except fn.FunctionError as exc:
            raise ExpressionError(str(exc)) from None
    delimiter = evaluate(expr.delimiter, resolver)
    lists = [evaluate(item, resolver) for item in expr.lists]
    if has_unknown(delimiter) or has_unknown(lists):
        return Unknown(ListJoin(delimiter, tuple(lists)))
    items: list[str] = []
    for item in lists:
        items.extend(_scalar_text(v) for v in (item if isinstance(item, list) else [item]))
    return str(delimiter).join(items)


def _scalar_text(value: Any) -> str:
    try:
        return fn.scalar_text(value)
    except fn.FunctionError as exc:
        raise ExpressionError(str(exc)) from None


def substitute_index(value: Any, index: int) -> Any:
    """Replace %index% in every string (including resource names inside references)."""
    token = "%index%"
    if isinstance(value, str):
        return value.replace(token, str(index))
    if isinstance(value, dict):
        return {substitute_index(k, index): substitute_index(v, index) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_index(v, index) for v in value]
    return value


def to_json(value: Any) -> Any:
    """Expression nodes back to their one-key tables; Unknown as {"__unknown__": expr}."""
    if isinstance(value, Unknown):
        return {"__unknown__": to_json(value.expr)}
    if isinstance(value, GetParam):
        return {"get_param": [value.name, *value.path] if value.path else value.name}
    if isinstance(value, GetResource):
        return {"get_resource": value.address}
    if isinstance(value, GetAttr):
        return {"get_attr": [value.address, value.attribute, *value.path]}
    if isinstance(value, StrReplace):
        return {
            "str_replace": {"template": to_json(value.template), "params": to_json(value.params)}
        }
    if isinstance(value, ListJoin):
        return {"list_join": [to_json(value.delimiter), *(to_json(v) for v in value.lists)]}
    if isinstance(value, Call):
        return {value.name: to_json(value.args)}
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def from_json(value: Any) -> Any:
    """The inverse of to_json."""
    if isinstance(value, dict):
        if len(value) == 1 and "__unknown__" in value:
            return Unknown(from_json(value["__unknown__"]))
        if len(value) == 1 and next(iter(value)) in FUNCTIONS:
            # a function's arguments may hold values still unknown when the plan was made
            return parse(_unknowns(value))
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def _unknowns(value: Any) -> Any:
    """{"__unknown__": ...} markers as Unknown, everything else left for parse."""
    if isinstance(value, dict):
        if len(value) == 1 and "__unknown__" in value:
            return Unknown(from_json(value["__unknown__"]))
        return {k: _unknowns(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unknowns(v) for v in value]
    return value


def describe(value: Any) -> str:
    """Short human text of an expression: get_attr web[0].addresses.lan"""
    if isinstance(value, GetResource):
        return f"get_resource {value.address}"
    if isinstance(value, GetAttr):
        return "get_attr " + ".".join([value.address, value.attribute, *map(str, value.path)])
    if isinstance(value, GetParam):
        return f"get_param {value.name}"
    if isinstance(value, StrReplace):
        return "str_replace"
    if isinstance(value, ListJoin):
        return "list_join"
    if isinstance(value, Call):
        return value.name
    return repr(value)
