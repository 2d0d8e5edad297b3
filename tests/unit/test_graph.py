"""The dependency graph: nodes per address, edges dependency -> dependent, cycles, DOT output."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import networkx as nx
import pytest

from iacloud.config import ResourceConfig, StackConfig
from iacloud.graph import build_graph, cycle_diagnostics, to_dot
from iacloud.loading import load_stack
from iacloud.provider import Registry


def rc(address: str, *deps: str, type: str = "fake_thing") -> ResourceConfig:
    name, _, rest = address.partition("[")
    index = int(rest.rstrip("]")) if rest else None
    return ResourceConfig(address, name, index, type, "fake", {}, tuple(sorted(deps)))


def stack(*resources: ResourceConfig, name: str = "lab") -> StackConfig:
    return StackConfig(
        name=name,
        file=Path("/tmp/lab.toml"),
        description="",
        parameters={},
        hidden_values=[],
        resources={r.address: r for r in resources},
        groups={},
        outputs={},
    )


def test_build_graph_nodes_and_edges() -> None:
    config = stack(
        rc("lan"),
        rc("data[0]", type="fake_disk"),
        rc("data[1]", type="fake_disk"),
        rc("web[0]", "data[0]", "lan"),
        rc("web[1]", "data[1]", "lan"),
        rc("app", "web[0]", "web[1]"),
    )
    graph = build_graph(config)
    assert list(graph.nodes) == list(config.resources)  # file order kept
    assert graph.nodes["web[1]"]["config"] is config.resources["web[1]"]
    assert set(graph.edges) == {
        ("data[0]", "web[0]"),
        ("lan", "web[0]"),
        ("data[1]", "web[1]"),
        ("lan", "web[1]"),
        ("web[0]", "app"),
        ("web[1]", "app"),
    }
    order = list(nx.topological_sort(graph))
    assert order.index("lan") < order.index("web[0]") < order.index("app")
    assert next(nx.topological_generations(graph)) == ["lan", "data[0]", "data[1]"]


def test_build_graph_of_empty_stack() -> None:
    graph = build_graph(stack())
    assert graph.number_of_nodes() == 0
    assert graph.graph["name"] == "lab"


def test_build_graph_rejects_unknown_dependency() -> None:
    with pytest.raises(ValueError, match="ghost"):
        build_graph(stack(rc("a", "ghost")))


def test_build_graph_from_loaded_stack(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        "version = 1\n"
        '[resources.data]\ntype = "fake_disk"\ncount = 2\nsize_gib = 1\n'
        '[resources.web]\ntype = "fake_thing"\ncount = 2\n'
        'ref = { get_resource = "data[%index%]" }\n'
        '[resources.lb]\ntype = "fake_thing"\nrefs = { get_attr = ["web", "id"] }\n'
    )
    graph = build_graph(load_stack(path, Registry.discover()))
    assert set(graph.predecessors("lb")) == {"web[0]", "web[1]"}
    assert list(graph.predecessors("web[1]")) == ["data[1]"]


def graph_of(edges: list[tuple[str, str]], nodes: list[str]) -> nx.DiGraph:
    """A name-level graph as the loader builds it: edge dependency -> dependent."""
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    return graph


def test_no_cycle_no_diagnostic() -> None:
    assert cycle_diagnostics(graph_of([("a", "b"), ("b", "c")], ["a", "b", "c"])) == []


def test_cycle_printed_in_depends_on_order_from_first_in_file() -> None:
    # c needs b, b needs a, a needs c: "a depends on c depends on b depends on a"
    graph = graph_of([("b", "c"), ("a", "b"), ("c", "a")], ["x", "a", "b", "c"])
    (d,) = cycle_diagnostics(graph, "/s.toml")
    assert d.message == "dependency cycle: a -> c -> b -> a"
    assert (d.file, d.address) == ("/s.toml", "resources.a")
    assert d.hint is not None and "each depends on the next" in d.hint


def test_every_cycle_reported_including_self_loops() -> None:
    graph = graph_of([("a", "b"), ("b", "a"), ("c", "c"), ("d", "e"), ("e", "d")], list("abcde"))
    messages = [d.message for d in cycle_diagnostics(graph)]
    assert messages == [
        "dependency cycle: a -> b -> a",
        "dependency cycle: c -> c",
        "dependency cycle: d -> e -> d",
    ]


def test_cycles_reported_are_bounded() -> None:
    # a complete graph has a huge number of simple cycles
    graph = nx.complete_graph(12, create_using=nx.DiGraph)
    graph = nx.relabel_nodes(graph, {i: f"r{i}" for i in graph})
    assert len(cycle_diagnostics(graph)) == 20


def test_to_dot() -> None:
    config = stack(rc("lan"), rc("web[0]", "lan"), rc("web[1]", "lan"), name="web")
    dot = to_dot(build_graph(config))
    assert dot.startswith('digraph "web" {\n')
    assert '  "web[0]" [label="web[0]\\nfake_thing"];\n' in dot
    assert '  "lan" -> "web[0]";\n' in dot
    assert '  "lan" -> "web[1]";\n' in dot
    assert dot.endswith("}\n")


def test_to_dot_escapes_names() -> None:
    graph = nx.DiGraph(name='my "lab"\\')
    graph.add_edge('a"b', "c\\d\ne")
    dot = to_dot(graph)
    assert 'digraph "my \\"lab\\"\\\\" {' in dot
    assert '"a\\"b" -> "c\\\\d\\ne";' in dot
    assert len(dot.splitlines()) == 7  # header, rankdir, node style, 2 nodes, 1 edge, "}"


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz not installed")
def test_to_dot_is_valid_graphviz() -> None:
    graph = nx.DiGraph(name='x"y')
    graph.add_edge('a"b', "c\\d\ne")
    graph.add_edge("c\\d\ne", "web[0]")
    result = subprocess.run(
        ["dot", "-Tplain"], input=to_dot(graph), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\nedge ") == 2
