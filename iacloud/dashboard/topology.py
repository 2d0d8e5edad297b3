"""The stack's topology as SVG: the dependency graph of iacloud.graph laid out in layers
(each resource one column right of everything it depends on), one box per resource with its
status as a class the page's script updates live. Built with ElementTree: every name is
escaped as XML text or attribute."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping

import networkx as nx

from iacloud.graph import Hub

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 190, 44, 70, 18, 12
MAX_NODES = 400  # beyond this a picture helps nobody; the resources table still lists them


def status_class(status: str | None) -> str:
    """A resource's state status (CREATE_COMPLETE, UPDATE_IN_PROGRESS, ...) as a CSS class."""
    if not status:
        return "status-absent"
    if status.endswith("_FAILED"):
        return "status-failed"
    if status.endswith("_IN_PROGRESS"):
        return "status-in-progress"
    if status.startswith("DELETE_"):
        return "status-absent"
    return "status-complete" if status.endswith("_COMPLETE") else "status-absent"


def _resource_graph(graph: nx.DiGraph) -> nx.DiGraph:
    """The graph without its hub nodes (edges through a hub become direct edges)."""
    out = nx.DiGraph()
    out.add_nodes_from((n, d) for n, d in graph.nodes(data=True) if not isinstance(n, Hub))
    for a, b in graph.edges:
        if isinstance(a, Hub):
            continue
        targets = graph.successors(b) if isinstance(b, Hub) else [b]
        out.add_edges_from((a, t) for t in targets)
    return out


def svg(graph: nx.DiGraph, types: Mapping[str, str], statuses: Mapping[str, str | None]) -> str:
    """SVG text of the graph from `build_graph`; `statuses` maps addresses to state statuses."""
    g = _resource_graph(graph)
    if len(g) > MAX_NODES:
        return ""
    layers = [sorted(layer) for layer in nx.topological_generations(g)]
    where: dict[str, tuple[int, int]] = {}
    for col, layer in enumerate(layers):
        for row, node in enumerate(layer):
            where[node] = (PAD + col * (BOX_W + GAP_X), PAD + row * (BOX_H + GAP_Y))
    width = PAD * 2 + max(len(layers), 1) * (BOX_W + GAP_X) - GAP_X
    height = PAD * 2 + max((len(layer) for layer in layers), default=1) * (BOX_H + GAP_Y) - GAP_Y
    root = ET.Element("svg", {
        "xmlns": "http://www.w3.org/2000/svg", "class": "topology", "role": "img",
        "width": str(width), "height": str(height), "viewBox": f"0 0 {width} {height}",
    })  # fmt: skip
    ET.SubElement(root, "title").text = "dependency graph"
    defs = ET.SubElement(root, "defs")
    marker = ET.SubElement(defs, "marker", {
        "id": "arrow", "viewBox": "0 0 10 10", "refX": "10", "refY": "5",
        "markerWidth": "7", "markerHeight": "7", "orient": "auto-start-reverse",
    })  # fmt: skip
    ET.SubElement(marker, "path", {"d": "M 0 0 L 10 5 L 0 10 z", "class": "arrowhead"})
    for a, b in g.edges:
        (ax, ay), (bx, by) = where[a], where[b]
        x1, y1, x2, y2 = ax + BOX_W, ay + BOX_H // 2, bx, by + BOX_H // 2
        mid = (x1 + x2) // 2
        ET.SubElement(root, "path", {
            "class": "edge", "d": f"M {x1} {y1} C {mid} {y1}, {mid} {y2}, {x2} {y2}",
            "marker-end": "url(#arrow)",
        })  # fmt: skip
    for node, (x, y) in where.items():
        address = str(node)
        group = ET.SubElement(root, "g", {
            "class": f"node {status_class(statuses.get(address))}", "data-address": address,
            "transform": f"translate({x},{y})",
        })  # fmt: skip
        ET.SubElement(group, "title").text = f"{address} ({types.get(address, '?')})"
        ET.SubElement(group, "rect", {"width": str(BOX_W), "height": str(BOX_H), "rx": "6"})
        ET.SubElement(group, "text", {"x": "10", "y": "18", "class": "address"}).text = _short(
            address
        )
        ET.SubElement(group, "text", {"x": "10", "y": "35", "class": "type"}).text = _short(
            types.get(address, "")
        )
    return ET.tostring(root, encoding="unicode")


def _short(text: str, limit: int = 26) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
