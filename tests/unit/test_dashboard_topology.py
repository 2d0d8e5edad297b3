"""The dashboard's topology SVG: layers by dependency, hubs collapsed into direct edges,
status classes, text escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import networkx as nx

from iacloud.dashboard import topology
from iacloud.graph import Hub

NS = {"s": "http://www.w3.org/2000/svg"}


def _nodes(svg: str) -> dict[str, tuple[str, str]]:
    root = ET.fromstring(svg)
    return {
        g.get("data-address"): (g.get("class"), g.get("transform"))
        for g in root.iterfind("s:g", NS)
    }  # fmt: skip


def test_layers_hubs_and_statuses() -> None:
    g = nx.DiGraph()
    hub = Hub(0)
    g.add_edges_from([("lan", "web[0]"), ("img", hub), ("lan", hub), (hub, "web[1]")])
    g.add_node("lonely")
    svg = topology.svg(
        g, {"lan": "network", "img": "image"},
        {"lan": "CREATE_COMPLETE", "img": "UPDATE_IN_PROGRESS", "web[0]": "CREATE_FAILED"},
    )  # fmt: skip
    nodes = _nodes(svg)
    assert set(nodes) == {"lan", "img", "web[0]", "web[1]", "lonely"}  # no hub drawn
    assert nodes["lan"][0] == "node status-complete"
    assert nodes["img"][0] == "node status-in-progress"
    assert nodes["web[0]"][0] == "node status-failed"
    assert nodes["web[1]"][0] == nodes["lonely"][0] == "node status-absent"
    x = {a: int(t.split("(")[1].split(",")[0]) for a, (_, t) in nodes.items()}
    assert x["lan"] == x["img"] == x["lonely"] < x["web[0]"] == x["web[1]"]
    edges = ET.fromstring(svg).findall("s:path", NS)
    assert len(edges) == 3  # lan->web[0], img->web[1], lan->web[1]: through the hub, direct


def test_names_are_escaped_and_big_graphs_not_drawn() -> None:
    g = nx.DiGraph()
    g.add_node('<a href="x">&')
    svg = topology.svg(g, {'<a href="x">&': "<script>"}, {})
    assert "<script>" not in svg and "<a href" not in svg
    assert ET.fromstring(svg).find("s:g/s:title", NS).text == '<a href="x">& (<script>)'
    big = nx.path_graph(topology.MAX_NODES + 1, create_using=nx.DiGraph)
    assert topology.svg(nx.relabel_nodes(big, str), {}, {}) == ""


def test_status_classes() -> None:
    assert topology.status_class("DELETE_COMPLETE") == "status-absent"
    assert topology.status_class("REFRESH_COMPLETE") == "status-complete"
    assert topology.status_class(None) == "status-absent"
