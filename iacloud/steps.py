"""The step graph of an apply: one node per step (create, update or delete of an address),
an edge where one step must finish before another; the executor schedules it.

Creates and updates run after what they depend on, deletes in reverse dependency order, a
replacement's two halves in sequence. A dependency list shared by a whole group goes through
one `graph.Hub` node, which is no step: the scheduler passes through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import networkx as nx

from iacloud.graph import Hub, add_dependency_edges
from iacloud.plan import Action, Change, Plan
from iacloud.provider import RunInfo
from iacloud.state.model import ResourceState

StepKind = Literal["create", "update", "delete"]


@dataclass(frozen=True)
class Step:
    kind: StepKind
    change: Change
    # the delete half of create-then-delete: the address already holds the new object
    superseded: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.change.address)

    @property
    def event_action(self) -> str:
        return self.kind.upper()


def step_graph(plan: Plan, recorded: Mapping[str, ResourceState]) -> nx.DiGraph:
    """Steps as nodes, 'must finish before' as edges: creates and updates after what they
    depend on; deletes in reverse dependency order; a replacement's halves in sequence."""
    g = nx.DiGraph()
    changes = {c.address: c for c in plan.actionable()}
    for c in changes.values():
        if c.action is Action.CREATE:
            g.add_node(("create", c.address), step=Step("create", c))
        elif c.action is Action.UPDATE:
            g.add_node(("update", c.address), step=Step("update", c))
        elif c.action is Action.DELETE:
            g.add_node(("delete", c.address), step=Step("delete", c))
        elif c.action is Action.DELETE_CREATE:
            g.add_node(("delete", c.address), step=Step("delete", c))
            g.add_node(("create", c.address), step=Step("create", c))
            g.add_edge(("delete", c.address), ("create", c.address))
        elif c.action is Action.CREATE_DELETE:
            g.add_node(("create", c.address), step=Step("create", c))
            g.add_node(("delete", c.address), step=Step("delete", c, superseded=True))
            g.add_edge(("create", c.address), ("delete", c.address))

    _add_order_edges(g, changes, recorded)
    return g


def _add_order_edges(
    g: nx.DiGraph, changes: Mapping[str, Change], recorded: Mapping[str, ResourceState]
) -> None:
    """Creates and updates after the creates and updates they depend on; deletes before the
    deletes of what they use, and after the updates of what stays and used them. A dependency
    list shared by many steps (a whole group) goes through one hub node (`graph.Hub`)."""

    def doing(address: str) -> tuple[str, str] | None:  # an address has a create or an update
        for kind in ("create", "update"):
            if (kind, address) in g:
                return (kind, address)
        return None

    def only(deps: Sequence[str], wanted: Callable[[str], bool]) -> list[str]:
        key = tuple(deps)
        found = kept.get(key)
        if found is None:
            found = kept[key] = [d for d in deps if wanted(d)]
        return found

    kept: dict[tuple[str, ...], list[str]] = {}
    building = []
    for c in changes.values():
        node = doing(c.address)
        if node is not None:
            building.append((node, only(c.dependencies, lambda d: doing(d) is not None)))
    add_dependency_edges(g, building, lambda d: doing(d) or ("", d))

    def deleted(d: str) -> bool:
        return ("delete", d) in g

    def gone(d: str) -> bool:
        # an object deleted for good, or the old object of a create-first replacement: users
        # updated in place move off it (to its successor) before it goes
        return ("delete", d) in g and changes[d].action in (Action.DELETE, Action.CREATE_DELETE)

    kept = {}
    users_deleted = []
    for address, rs in recorded.items():
        if ("delete", address) in g:
            users_deleted.append((("delete", address), only(rs.dependencies, deleted)))
    add_dependency_edges(g, users_deleted, lambda d: ("delete", d), reverse=True)
    # a resource that stays must stop using one that goes before it goes
    kept = {}
    users_updated = []
    for address, rs in recorded.items():
        if ("update", address) in g:
            users_updated.append((("update", address), only(rs.dependencies, gone)))
    add_dependency_edges(g, users_updated, lambda d: ("delete", d), reverse=True)


def run_info(graph: nx.DiGraph) -> RunInfo:
    """The ids of the objects the plan's delete steps remove."""
    deleting = set()
    for node in graph:
        step = graph.nodes[node].get("step")
        if step is not None and step.kind == "delete" and step.change.id:
            deleting.add(step.change.id)
    return RunInfo(deleting=frozenset(deleting))


def priorities(graph: nx.DiGraph) -> dict[Any, tuple[int, str]]:
    """Longest remaining path first, so the critical path starts as early as possible."""
    depth: dict[Any, int] = {}
    for node in reversed(list(nx.topological_sort(graph))):
        below = max((depth[s] for s in graph.successors(node)), default=0)
        depth[node] = below if isinstance(node, Hub) else 1 + below  # a hub is no step
    return {
        node: (-d, f"{node[1]}/{node[0]}") for node, d in depth.items() if not isinstance(node, Hub)
    }
