"""HOT's conditions, once parameters are known: each resource or output whose condition is false
is left out of the stack, and `depends_on` entries naming a left-out resource are dropped (as
Heat does). A condition may use parameters but never a resource."""

from __future__ import annotations

import dataclasses
from typing import Any

from iacloud.loading.diagnostics import Sink
from iacloud.loading.document import StackDocument
from iacloud.loading.parameters import ParameterSet
from iacloud.loading.prepare import BROKEN, prepare
from iacloud.loading.scan import has_expr
from iacloud.loading.values import show


def apply_conditions(document: StackDocument, params: ParameterSet, sink: Sink) -> StackDocument:
    """The document without the entries whose condition is false."""
    if not document.conditions:
        return document
    left_out: dict[str, set[str]] = {"resources": set(), "outputs": set()}
    for (section, name), expression in document.conditions.items():
        address = f"{section}.{name}"
        value = prepare(expression, "condition", sink, address, params)
        if value is BROKEN:
            continue
        if has_expr(value):
            sink.add("a condition can use parameters, not resources", address, "condition")
            continue
        if not isinstance(value, bool):
            sink.add(
                f"a condition must be true or false, found {show(value, params.secrets)}",
                address,
                "condition",
            )
            continue
        if not value:
            left_out.setdefault(section, set()).add(name)
    gone = left_out["resources"]
    resources: dict[str, Any] = {}
    for name, definition in document.resources.items():
        if name in gone:
            continue
        if isinstance(definition, dict) and isinstance(definition.get("depends_on"), list):
            kept = [d for d in definition["depends_on"] if d not in gone]
            definition = {**definition, "depends_on": kept}
        resources[name] = definition
    outputs = {n: o for n, o in document.outputs.items() if n not in left_out["outputs"]}
    return dataclasses.replace(document, resources=resources, outputs=outputs)
