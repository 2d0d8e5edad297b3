"""The symbol table of resources a reference can name, and the checks of each reference:
unknown names, attributes the type lacks, indices out of range. Each check returns the
addresses the referring instance depends on; the table records the name-level edges for the
cycle check."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from iacloud import expressions as ex
from iacloud.errors import did_you_mean
from iacloud.loading.diagnostics import Sink
from iacloud.loading.scan import references as find_references
from iacloud.provider import ResourceType


@dataclass
class Target:
    """What a reference needs to know of a resource; broken definitions stay known by name so
    one mistake does not turn into "unknown resource" errors everywhere else."""

    name: str
    type_cls: type[ResourceType] | None
    counted: bool
    count: int | None  # None when counted but the count could not be evaluated
    addresses: list[str] = field(default_factory=list)


@dataclass
class SymbolTable:
    """Every declared resource by name, in file order, and what references found so far."""

    targets: dict[str, Target] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)  # every declared name, also invalid ones
    # name-level dependencies, for cycles: (dependency, dependent)
    edges: set[tuple[str, str]] = field(default_factory=set)
    # whole-group references, made once: every instance referring to a group shares the set
    _group_sets: dict[str, frozenset[str]] = field(default_factory=dict)

    def references(
        self,
        value: Any,
        sink: Sink,
        address: str,
        where: str,
        owner: str | None,
        check_index: bool = True,
    ) -> AbstractSet[str]:
        """Check every get_resource / get_attr in a value; the addresses they depend on. Not
        to be changed in place: a whole-group reference is the group's one shared set."""
        found = [
            self.reference(
                node.name,
                node.index,
                node.attribute if isinstance(node, ex.GetAttr) else None,
                sink,
                address,
                at,
                owner,
                check_index,
            )
            for node, at in find_references(value, where)
        ]
        if len(found) == 1:
            return found[0]
        return set().union(*found)

    def reference(
        self,
        name: str,
        index: int | None,
        attribute: str | None,
        sink: Sink,
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
            self.edges.add((name, owner))
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
            if name not in self._group_sets:
                self._group_sets[name] = frozenset(target.addresses)
            return self._group_sets[name]
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
        self, text: str, sink: Sink, address: str, where: str, owner: str, check_index: bool = True
    ) -> AbstractSet[str]:
        """One `depends_on` entry ("name" or "name[3]") checked like a reference."""
        try:
            name, index = ex.parse_address(text)
        except ex.ExpressionError as exc:
            sink.add(str(exc), address, where)
            return set()
        return self.reference(name, index, None, sink, address, where, owner, check_index)
