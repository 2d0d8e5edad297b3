"""Expression preparation: a raw value parsed into expression nodes, parameters substituted and
whatever is fully known evaluated now. What remains holds get_resource / get_attr nodes (plus
str_replace / list_join around them) for the planner and executor."""

from __future__ import annotations

from typing import Any

from iacloud import expressions as ex
from iacloud.errors import did_you_mean
from iacloud.loading.diagnostics import Sink
from iacloud.loading.parameters import ParameterSet
from iacloud.loading.scan import has_expr
from iacloud.loading.values import render
from iacloud.redact import DIAGNOSTIC_MASK, Redactor


class _Broken:
    """A field whose value could not be prepared (already reported): left out of validation."""


BROKEN = _Broken()


def prepare(raw: Any, where: str, sink: Sink, address: str, params: ParameterSet) -> Any:
    """Parse a raw value into expression nodes, substitute parameters and evaluate what is
    fully known; BROKEN when that failed (reported)."""
    try:
        parsed = ex.parse(raw, where)
    except ex.ExpressionError as exc:
        sink.add(_masked(str(exc), params), address, exc.path or where)
        return BROKEN
    before = sink.count
    value = _static(parsed, sink, address, where, params)
    return BROKEN if sink.count > before else value  # ELIDED: a 2-argument `if` left nothing


def _masked(text: str, params: ParameterSet) -> str:
    return Redactor(params.secrets, DIAGNOSTIC_MASK).text(text)


def _static(value: Any, sink: Sink, address: str, where: str, params: ParameterSet) -> Any:
    if isinstance(value, ex.GetParam):
        return _param_value(value, sink, address, where, params)
    if isinstance(value, ex.Call):
        return _static_call(value, sink, address, where, params)
    if isinstance(value, (ex.StrReplace, ex.ListJoin)):
        if isinstance(value, ex.StrReplace):
            node: Any = ex.StrReplace(
                _static(value.template, sink, address, where, params),
                _static(value.params, sink, address, where, params),
            )
        else:
            node = ex.ListJoin(
                _static(value.delimiter, sink, address, where, params),
                tuple(_static(v, sink, address, where, params) for v in value.lists),
            )
        parts = (
            (node.template, node.params)
            if isinstance(node, ex.StrReplace)
            else (node.delimiter, node.lists)
        )
        if has_expr(parts):  # needs a resource: the executor finishes it
            return node
        try:
            return ex.evaluate(node, ex.Resolver())
        except ex.ExpressionError as exc:
            sink.add(_masked(str(exc), params), address, where)
            return node
    if isinstance(value, dict):
        out = {
            k: _static(v, sink, address, f"{where}.{k}" if where else str(k), params)
            for k, v in value.items()
        }
        return {k: v for k, v in out.items() if v is not ex.ELIDED}
    if isinstance(value, list):
        items = [_static(v, sink, address, f"{where}[{i}]", params) for i, v in enumerate(value)]
        return [v for v in items if v is not ex.ELIDED]
    return value


def _static_call(call: ex.Call, sink: Sink, address: str, where: str, params: ParameterSet) -> Any:
    """A Call with parameters substituted and, when nothing in it needs a resource, its value.
    `if` is lazy: with its condition known, only the chosen branch is prepared, so a reference
    in the branch not taken is never checked (Heat's meaning)."""
    if call.name == "if":
        condition = _static(call.args[0], sink, address, where, params)
        if not has_expr(condition):
            try:
                chosen = ex.evaluate(ex.Call("if", [condition, 0, 1]), ex.Resolver())
            except ex.ExpressionError as exc:
                sink.add(_masked(str(exc), params), address, where)
                return call
            if chosen == 0:
                return _static(call.args[1], sink, address, where, params)
            if len(call.args) > 2:
                return _static(call.args[2], sink, address, where, params)
            return ex.ELIDED
        args: Any = [condition, *(_static(a, sink, address, where, params) for a in call.args[1:])]
    else:
        args = _static(call.args, sink, address, where, params)
    node = ex.Call(call.name, args)
    if has_expr(args):  # needs a resource: the executor finishes it
        return node
    try:
        return ex.evaluate(node, ex.Resolver())
    except ex.ExpressionError as exc:
        sink.add(_masked(str(exc), params), address, where)
        return node


def _param_value(
    node: ex.GetParam, sink: Sink, address: str, where: str, params: ParameterSet
) -> Any:
    if node.name not in params.names:
        hint = did_you_mean(node.name, params.names)
        sink.add(f"get_param: unknown parameter '{node.name}'", address, where, hint)
        return node
    if node.name not in params.values:  # missing or invalid: reported with the parameter
        return node
    value = params.values[node.name]
    for key in node.path:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            sink.add(f"get_param: parameter '{node.name}' has no key {render(key)}", address, where)
            return node
    return value
