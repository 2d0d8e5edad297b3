"""What the stack says to its providers: each provider's settings (`[provider.NAME]`), and each
provider's checks of its resources against each other once the whole stack is resolved."""

from __future__ import annotations

from typing import Any

from iacloud import expressions as ex
from iacloud.config import ResourceConfig
from iacloud.errors import did_you_mean
from iacloud.loading.diagnostics import GroupSink, Sink
from iacloud.loading.model_errors import validate_model
from iacloud.loading.parameters import ParameterSet
from iacloud.loading.prepare import BROKEN, prepare
from iacloud.loading.references import SymbolTable
from iacloud.loading.scan import has_expr
from iacloud.loading.shape import check_table
from iacloud.provider import Registry


def load_provider_settings(
    raw: dict[str, Any], registry: Registry, params: ParameterSet, sink: Sink
) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for name, table in raw.items():
        address = f"provider.{name}"
        cls = registry.providers.get(name)
        if cls is None:
            hint = did_you_mean(name, registry.providers) or (
                "installed providers: " + ", ".join(sorted(registry.providers))
            )
            sink.add(f"unknown provider '{name}'", address, hint=hint)
            continue
        if not check_table(table, address, "the provider's settings", sink, params.secrets):
            continue
        data: dict[str, Any] = {}
        for key, value in table.items():
            prepared = prepare(value, key, sink, address, params)
            if prepared is BROKEN or prepared is ex.ELIDED:
                continue
            if has_expr(prepared):
                sink.add("provider settings can use get_param, but not resources", address, key)
                continue
            data[key] = prepared
        instance = validate_model(cls.Settings, data, sink, address, params.secrets)
        if instance is not None:
            settings[name] = instance
    return settings


def cross_check(
    resources: dict[str, ResourceConfig], registry: Registry, symbols: SymbolTable, sink: Sink
) -> None:
    """Each provider's checks of its resources against each other (a port's address
    against its network's subnet), once, on the resolved configuration."""
    groups: dict[str, dict[str, ResourceConfig]] = {}
    for address, rc in resources.items():
        if rc.provider:
            groups.setdefault(rc.provider, {})[address] = rc
    for name, group in groups.items():
        try:
            found = registry.providers[name].validate_stack(group)
        except Exception as exc:  # a provider's bug must not become a traceback
            sink.add(
                f"provider '{name}' failed to check the stack: {type(exc).__name__}: {exc}",
                hint="a bug in the provider: please report it",
            )
            continue
        # a counted resource's problems merged as its own fields' are: a port counted
        # 10,000 times with one ip is one diagnostic, not 9,999 lines
        group_sinks: dict[str, GroupSink] = {}
        for d in found:
            where = f"resources.{d.address}" if d.address else None
            resource = (d.address or "").split("[", 1)[0]
            target = symbols.targets.get(resource)
            into: Sink = sink
            if where is not None and target is not None and target.counted:
                if resource not in group_sinks:
                    group_sinks[resource] = GroupSink(sink.file, f"resources.{resource}")
                into = group_sinks[resource]
            into.add(d.message, where, d.field, d.hint)
        for group_sink in group_sinks.values():
            group_sink.flush_into(sink)
