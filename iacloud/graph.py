"""The dependency graph of a stack: one node per resource address, edges dependency -> dependent.

The planner and executor walk it with networkx's topological functions (creates in order,
deletes in reverse); the loader uses `cycle_diagnostics` on the name-level graph; `iacloud graph`
prints `to_dot`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

import networkx as nx

from iacloud.config import StackConfig
from iacloud.errors import Diagnostic

# enough to show the shape of a tangle without flooding the terminal
MAX_CYCLES_REPORTED = 20
# a dependency list at least this long, shared by several dependents, goes through a hub node
HUB_MIN_DEPENDENCIES = 8


@dataclass(frozen=True)
class Hub:
    """A graph node standing for one dependency list shared by many dependents (every instance
    of `b` referring to the whole group `a`): N dependents of N addresses cost 2N edges through
    it instead of N * N. It carries no resource; callers skip it when walking the graph."""

    key: int


def add_dependency_edges(
    graph: nx.DiGraph,
    dependents: Iterable[tuple[Hashable, Sequence[str]]],
    node: Callable[[str], Hashable] = lambda address: address,
    *,
    reverse: bool = False,
) -> None:
    """Add edges dependency -> dependent for (dependent node, dependency addresses) pairs;
    `reverse`: dependent -> dependency instead (deletes: a user goes before what it uses)."""
    hubs: dict[tuple[str, ...], Hub] = {}
    first = graph.graph.get("hubs", 0)  # hub keys stay unique across calls on one graph
    edges: list[tuple[Hashable, Hashable]] = []
    for dependent, deps in dependents:
        if len(deps) < HUB_MIN_DEPENDENCIES:
            edges.extend((node(d), dependent) for d in deps)
            continue
        key = tuple(deps)
        hub = hubs.get(key)
        if hub is None:
            hub = hubs[key] = Hub(first + len(hubs))
            edges.extend((node(d), hub) for d in key)
        edges.append((hub, dependent))
    graph.graph["hubs"] = first + len(hubs)
    graph.add_edges_from([(b, a) for a, b in edges] if reverse else edges)


def build_graph(config: StackConfig) -> nx.DiGraph:
    """Every resource instance of the stack as a node (attribute `config`), with an edge from
    each dependency to the resource that needs it."""
    graph = nx.DiGraph(name=config.name)
    graph.add_nodes_from((address, {"config": rc}) for address, rc in config.resources.items())
    lists = {id(rc.depends_on): rc.depends_on for rc in config.resources.values()}
    missing = {dep for deps in lists.values() for dep in deps if dep not in config.resources}
    if missing:  # the loader guarantees this never happens; fail loudly rather than add bare nodes
        raise ValueError(f"depends_on names addresses not in the stack: {sorted(missing)}")
    add_dependency_edges(
        graph, ((address, rc.depends_on) for address, rc in config.resources.items())
    )
    return graph


def cycle_diagnostics(
    graph: nx.DiGraph, file: str | None = None, address_prefix: str = "resources."
) -> list[Diagnostic]:
    """One diagnostic per dependency cycle, printed in 'depends on' order and closed:
    "dependency cycle: a -> b -> c -> a" (a depends on b, b on c, c on a)."""
    if nx.is_directed_acyclic_graph(graph):  # the common case: linear, no cycle enumeration
        return []
    position = {node: i for i, node in enumerate(graph.nodes)}
    found: list[tuple[int, str, Diagnostic]] = []
    for cycle in itertools.islice(nx.simple_cycles(graph), MAX_CYCLES_REPORTED):
        # edges run dependency -> dependent, so reversing gives the "depends on" reading
        path: list[Hashable] = list(reversed(cycle))
        start = min(range(len(path)), key=lambda i: position[path[i]])
        path = path[start:] + path[:start]
        text = " -> ".join(str(n) for n in [*path, path[0]])
        diagnostic = Diagnostic(
            f"dependency cycle: {text}",
            file=file,
            address=f"{address_prefix}{path[0]}",
            hint="each depends on the next; remove one of these references or depends_on entries",
        )
        found.append((position[path[0]], diagnostic.message, diagnostic))
    return [d for _, _, d in sorted(found, key=lambda t: t[:2])]


def _dot_id(text: str) -> str:
    """A DOT quoted string: backslashes and quotes escaped, newlines kept as DOT's \\n."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")
    return f'"{escaped}"'


def _node_text(node: Hashable) -> str:
    return f"(shared dependencies {node.key})" if isinstance(node, Hub) else str(node)


def to_dot(graph: nx.DiGraph) -> str:
    """Graphviz DOT text of a graph from `build_graph`: nodes labelled with address and type."""
    lines = [
        f"digraph {_dot_id(str(graph.graph.get('name') or 'stack'))} {{",
        "  rankdir=LR;",
        '  node [shape=box, fontname="Helvetica"];',
    ]
    for node, data in graph.nodes(data=True):
        if isinstance(node, Hub):  # a shared dependency list: a dot the edges meet at
            lines.append(f"  {_dot_id(_node_text(node))} [shape=point];")
            continue
        rc = data.get("config")
        label = f"{node}\n{rc.type}" if rc is not None else str(node)
        lines.append(f"  {_dot_id(str(node))} [label={_dot_id(label)}];")
    lines.extend(f"  {_dot_id(_node_text(a))} -> {_dot_id(_node_text(b))};" for a, b in graph.edges)
    lines.append("}")
    return "\n".join(lines) + "\n"
