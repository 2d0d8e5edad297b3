"""Heat's pure intrinsic functions beyond get_* / str_replace / list_join: their argument shapes
and what they compute from fully known arguments. `iacloud.expressions` parses them into `Call`
nodes and evaluates the arguments (or defers the call while one is known only after apply); this
module only sees plain values, so TOML stacks and HOT templates share one meaning.

Results are bounded: `repeat` over several lists makes every permutation, so a template could
otherwise ask for billions of items.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from typing import Any

# `if` is evaluated lazily by expressions.py; the rest here
CALLS = (
    "str_replace_strict",
    "str_replace_vstrict",
    "repeat",
    "str_split",
    "map_merge",
    "map_replace",
    "list_concat",
    "list_concat_unique",
    "filter",
    "digest",
    "contains",
    "equals",
    "not",
    "and",
    "or",
    "if",
)
CONDITION_FUNCTIONS = ("equals", "not", "and", "or", "contains")
MAX_ITEMS = 100_000  # items one function call may produce
DIGESTS = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")


class FunctionError(ValueError):
    """A function applied to arguments of the wrong shape; the message says which."""


def _list_of(name: str, arg: Any, low: int, high: int | None, form: str) -> None:
    if not isinstance(arg, list) or len(arg) < low or (high is not None and len(arg) > high):
        raise FunctionError(f"{name} expects {form}, found {_short(arg)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_shape(name: str, arg: Any) -> None:
    """The argument's outer shape, checked when the function is parsed (its parts may still be
    functions themselves)."""
    if name in ("str_replace_strict", "str_replace_vstrict"):
        if not (isinstance(arg, dict) and set(arg) == {"template", "params"}):
            raise FunctionError(f"{name} expects {{template: ..., params: {{...}}}}")
    elif name == "repeat":
        if not (isinstance(arg, dict) and {"template", "for_each"} <= set(arg)):
            raise FunctionError("repeat expects {template: ..., for_each: {VAR: [items]}}")
        extra = set(arg) - {"template", "for_each", "permutations"}
        if extra:
            raise FunctionError(f"repeat: unknown argument {sorted(extra)[0]!r}")
        if not isinstance(arg["for_each"], dict) or not arg["for_each"]:
            raise FunctionError("repeat: for_each must map each placeholder to a list")
    elif name == "str_split":
        _list_of(name, arg, 2, 3, "[delimiter, string] or [delimiter, string, index]")
    elif name in ("map_merge", "list_concat", "list_concat_unique"):
        if not isinstance(arg, list):
            raise FunctionError(f"{name} expects a list of arguments, found {_short(arg)}")
    elif name == "map_replace":
        _list_of(name, arg, 2, 2, "[map, {keys: {...}, values: {...}}]")
        if isinstance(arg[1], dict) and set(arg[1]) - {"keys", "values"}:
            raise FunctionError("map_replace: the second argument takes only 'keys' and 'values'")
    elif name in ("digest", "equals", "contains", "filter"):
        forms = {
            "digest": "[algorithm, value]",
            "equals": "[value_1, value_2]",
            "contains": "[value, sequence]",
            "filter": "[values_to_remove, list]",
        }
        _list_of(name, arg, 2, 2, forms[name])
    elif name in ("and", "or"):
        _list_of(name, arg, 1, None, "a list of conditions")
    elif name == "if":
        _list_of(name, arg, 2, 3, "[condition, value_if_true, value_if_false]")


def scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        raise FunctionError(f"expected a string or number, found {_short(value)}")
    if value is None:
        return ""
    return str(value)


def str_replace(template: Any, params: Any, strict: bool = False, vstrict: bool = False) -> str:
    what = "str_replace_vstrict" if vstrict else "str_replace_strict" if strict else "str_replace"
    if not isinstance(template, str) or not isinstance(params, dict):
        raise FunctionError(f"{what} needs a string template and a table of params")
    for key in params:
        if (strict or vstrict) and str(key) not in template:
            raise FunctionError(f"{what}: the param {str(key)!r} is not in the template")
        if vstrict and scalar_text(params[key]) == "":
            raise FunctionError(f"{what}: the param {str(key)!r} is empty")
    # longest keys first, so "$IP" is not eaten by "$I"
    for key in sorted(params, key=lambda k: len(str(k)), reverse=True):
        template = template.replace(str(key), scalar_text(params[key]))
    return template


def _replace_all(value: Any, pairs: list[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        for key, replacement in pairs:
            value = value.replace(key, replacement)
        return value
    if isinstance(value, dict):
        return {_replace_all(k, pairs): _replace_all(v, pairs) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_all(v, pairs) for v in value]
    return value


def _repeat(arg: dict[str, Any]) -> list[Any]:
    for_each = arg["for_each"]
    names = [str(k) for k in for_each]
    lists = []
    for key, items in for_each.items():
        if isinstance(items, dict):  # HOT 2016-10-14: a map's keys
            items = list(items)
        if not isinstance(items, list):
            raise FunctionError(f"repeat: for_each {key!r} must be a list, found {_short(items)}")
        lists.append(items)
    permutations = arg.get("permutations", True)
    if not isinstance(permutations, bool):
        raise FunctionError("repeat: permutations must be true or false")
    if permutations:
        total = 1
        for items in lists:
            total *= len(items)
            if total > MAX_ITEMS:
                raise FunctionError(f"repeat would make more than {MAX_ITEMS:,} items")
        combos: Any = itertools.product(*lists)
    else:
        if len({len(items) for items in lists}) > 1:
            raise FunctionError("repeat: with permutations false, the lists must be as long")
        combos = zip(*lists, strict=True)
    order = sorted(range(len(names)), key=lambda i: len(names[i]), reverse=True)
    return [
        _replace_all(arg["template"], [(names[i], scalar_text(combo[i])) for i in order])
        for combo in combos
    ]


def _str_split(arg: list[Any]) -> Any:
    delimiter, text = arg[0], arg[1]
    if not isinstance(delimiter, str) or not delimiter:
        raise FunctionError("str_split: the delimiter must be a non-empty string")
    if not isinstance(text, str):
        raise FunctionError(f"str_split: expected a string to split, found {_short(text)}")
    parts = text.split(delimiter)
    if len(arg) == 2:
        return parts
    index = arg[2]
    if isinstance(index, str) and index.isdigit():
        index = int(index)
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(parts):
        raise FunctionError(f"str_split: index {index!r} is out of range (0 to {len(parts) - 1})")
    return parts[index]


def _map_merge(arg: list[Any]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for item in arg:
        if item is None:
            continue
        if not isinstance(item, dict):
            raise FunctionError(f"map_merge: expected maps, found {_short(item)}")
        out.update(item)
    return out


def _map_replace(arg: list[Any]) -> dict[Any, Any]:
    source, spec = arg
    if not isinstance(source, dict) or not isinstance(spec, dict):
        raise FunctionError("map_replace expects [map, {keys: {...}, values: {...}}]")
    keys, values = spec.get("keys") or {}, spec.get("values") or {}
    if not isinstance(keys, dict) or not isinstance(values, dict):
        raise FunctionError("map_replace: 'keys' and 'values' must be maps")
    out: dict[Any, Any] = {}
    for key, value in source.items():
        new_key = keys.get(key, key)
        if new_key in out or (new_key != key and new_key in source):
            raise FunctionError(f"map_replace: replacing key {key!r} collides with {new_key!r}")
        hashable = not isinstance(value, (dict, list))
        out[new_key] = values.get(value, value) if hashable else value
    return out


def _list_concat(arg: list[Any], unique: bool) -> list[Any]:
    out: list[Any] = []
    for item in arg:
        if item is None:
            continue
        if not isinstance(item, list):
            raise FunctionError(f"list_concat: expected lists, found {_short(item)}")
        for value in item:
            if not unique or value not in out:
                out.append(value)
        if len(out) > MAX_ITEMS:
            raise FunctionError(f"list_concat would make more than {MAX_ITEMS:,} items")
    return out


def _digest(arg: list[Any]) -> str:
    algorithm, value = arg
    if algorithm not in DIGESTS:
        raise FunctionError(f"digest: unknown algorithm {algorithm!r}; known: {', '.join(DIGESTS)}")
    return hashlib.new(algorithm, scalar_text(value).encode()).hexdigest()


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise FunctionError(f"{name}: expected a condition (true or false), found {_short(value)}")
    return value


def _filter(arg: list[Any]) -> list[Any]:
    remove, items = arg
    if not isinstance(items, list) or not isinstance(remove, list):
        raise FunctionError("filter expects [values_to_remove, list]")
    return [v for v in items if v not in remove]


def _contains(arg: list[Any]) -> bool:
    value, sequence = arg
    if not isinstance(sequence, (list, str, dict)):
        raise FunctionError(f"contains: expected a list or string, found {_short(sequence)}")
    return value in sequence


_APPLY: dict[str, Callable[[Any], Any]] = {
    "str_replace_strict": lambda a: str_replace(a["template"], a["params"], strict=True),
    "str_replace_vstrict": lambda a: str_replace(a["template"], a["params"], vstrict=True),
    "repeat": _repeat,
    "str_split": _str_split,
    "map_merge": _map_merge,
    "map_replace": _map_replace,
    "list_concat": lambda a: _list_concat(a, unique=False),
    "list_concat_unique": lambda a: _list_concat(a, unique=True),
    "filter": _filter,
    "digest": _digest,
    "contains": _contains,
    "equals": lambda a: a[0] == a[1],
    "not": lambda a: not _boolean("not", a),
    "and": lambda a: all([_boolean("and", v) for v in a]),
    "or": lambda a: any([_boolean("or", v) for v in a]),
}


def apply(name: str, args: Any) -> Any:
    """The function applied to fully known arguments; FunctionError for a wrong shape."""
    return _APPLY[name](args)
