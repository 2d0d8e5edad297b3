"""Outputs: each value prepared like a resource field and its references checked; an output
depends on resources but nothing depends on it, so it adds no edges."""

from __future__ import annotations

from typing import Any

from iacloud import expressions as ex
from iacloud.config import OutputConfig
from iacloud.loading.diagnostics import Sink
from iacloud.loading.model_errors import validate_model
from iacloud.loading.parameters import ParameterSet
from iacloud.loading.prepare import BROKEN, prepare
from iacloud.loading.references import SymbolTable
from iacloud.loading.scan import scan
from iacloud.loading.shape import check_name, check_table
from iacloud.stack import OutputDef


def load_outputs(
    raw: dict[str, Any], params: ParameterSet, symbols: SymbolTable, sink: Sink
) -> dict[str, OutputConfig]:
    outputs: dict[str, OutputConfig] = {}
    for name, definition in raw.items():
        address = f"outputs.{name}"
        if not check_name(name, address, sink) or not check_table(
            definition, address, "value = ...", sink, params.secrets
        ):
            continue
        odef = validate_model(OutputDef, definition, sink, address, params.secrets)
        if "value" not in definition:
            continue
        # the value is checked even when other keys are wrong: report everything at once
        _, near_misses = scan(definition["value"], "value")
        for where, fn, suggestion in near_misses:
            sink.add(f"unknown function '{fn}'", address, where, f"did you mean '{suggestion}'?")
        value = prepare(definition["value"], "value", sink, address, params)
        if value is BROKEN:
            continue
        if value is ex.ELIDED:
            value = None
        symbols.references(value, sink, address, "value", owner=None)
        if odef is not None:
            outputs[name] = OutputConfig(name, value, odef.description, odef.sensitive)
    return outputs
