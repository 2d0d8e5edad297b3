"""Stack loading: a stack file plus parameters becomes a validated StackConfig.

Everything that can be checked without touching a host is checked here: the file's syntax and
shape, parameter types and Heat constraints, resource types and field names, references,
counts, inputs against each type's schema, provider settings and dependency cycles. Every
mistake becomes a Diagnostic; they are all collected and raised together in one UserError, and
no Python exception escapes for bad input.

The steps, one module each: a format's front (`toml_front`) reads the file into the neutral
`document.StackDocument`; `parameters` resolves the values; `catalog_refs` replaces names of
the site catalog (`iacloud.site`, read by `site_file`); `declare` builds the symbol table of
resources; `expand` prepares each resource's fields (`prepare`), checks its references
(`references`) and expands `count`; `outputs` and `providers` follow; `diagnostics` reports.
What remains in the properties are plain values and get_resource / get_attr expression nodes,
which the planner and executor evaluate once the referenced resources exist.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence
from pathlib import Path

import networkx as nx

from iacloud.config import ResourceConfig, StackConfig
from iacloud.graph import cycle_diagnostics
from iacloud.loading import hot_front, toml_front
from iacloud.loading.catalog_refs import resolve_names
from iacloud.loading.conditions import apply_conditions
from iacloud.loading.declare import declare_resources
from iacloud.loading.diagnostics import Sink, fail
from iacloud.loading.document import StackDocument
from iacloud.loading.expand import DependencyBudget, expand_resource
from iacloud.loading.outputs import load_outputs
from iacloud.loading.param_values import convert_param, parse_param_assignment
from iacloud.loading.parameters import EnvReader, load_parameters
from iacloud.loading.providers import cross_check, load_provider_settings
from iacloud.provider import Registry
from iacloud.site import SiteCatalog


def load_stack(
    path: Path,
    registry: Registry,
    params: Sequence[str] = (),
    env_files: Sequence[Path] = (),
    site: SiteCatalog | None = None,
) -> StackConfig:
    """Load and validate a stack file with its parameters (defaults < env files < -p), names
    of the site catalog `site` resolved. Raises UserError listing every problem found; nothing
    else escapes for bad input."""
    with _gc_paused():
        return _load(Path(path), registry, params, env_files, site)


def _load(
    path: Path,
    registry: Registry,
    params: Sequence[str],
    env_files: Sequence[Path],
    site: SiteCatalog | None,
) -> StackConfig:
    # a function of its own so that the raw document is freed before the collector resumes
    sink = Sink(str(path))
    document = read_document(path, registry, sink)
    if document is None:
        fail(sink, (), {})
    # `-e env.yaml` works for a TOML stack too: a Heat environment with its parameters
    read_env = hot_front.env_reader(document, toml_front.read_env_file)
    return resolve(document, registry, params, env_files, sink, read_env, site=site)


def read_document(path: Path, registry: Registry, sink: Sink) -> StackDocument | None:
    """The file as the neutral document, by its format's front (a HOT template by its
    `heat_template_version`/suffix, else TOML); None when it cannot be read (reported to
    `sink`)."""
    if hot_front.is_template(path):
        return hot_front.read_template(path, registry, sink)
    return toml_front.read_stack(path, sink)


def resolve(
    document: StackDocument,
    registry: Registry,
    assignments: Sequence[str],
    env_files: Sequence[Path],
    sink: Sink,
    read_env: EnvReader = toml_front.read_env_file,
    site: SiteCatalog | None = None,
) -> StackConfig:
    """A neutral document, whatever its format, checked and resolved into a StackConfig;
    raises UserError with what `sink` already holds and every problem found here. `read_env`
    is the front's reader of environment files; `site` the catalog that names in the document
    (flavor, image, key pairs, networks) and custom constraints are resolved against."""
    params = load_parameters(document.parameters, assignments, env_files, read_env, sink, site)
    document = apply_conditions(document, params, sink)
    document = resolve_names(document, site, params, sink)
    symbols, declared = declare_resources(document.resources, registry, params, sink)
    budget = DependencyBudget()
    resources: dict[str, ResourceConfig] = {}
    groups: dict[str, list[str]] = {}
    for res in declared:
        for rc in expand_resource(res, symbols, params, registry, budget, sink):
            resources[rc.address] = rc
        if symbols.targets[res.name].counted:
            groups[res.name] = symbols.targets[res.name].addresses
    cross_check(resources, registry, symbols, sink)
    outputs = load_outputs(document.outputs, params, symbols, sink)
    provider_settings = load_provider_settings(document.provider, registry, params, sink)
    name_graph = nx.DiGraph()
    name_graph.add_nodes_from(symbols.names)
    name_graph.add_edges_from(symbols.edges)
    sink.extend(cycle_diagnostics(name_graph, sink.file))
    if sink.items:
        fail(sink, params.secrets, document.positions, document.lines)
    return StackConfig(
        name=document.name,
        file=document.path,
        description=document.description,
        parameters=dict(params.values),
        hidden_values=params.hidden_values(),
        resources=resources,
        groups=groups,
        outputs=outputs,
        provider_settings=provider_settings,
        notes=list(document.notes),
    )


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Loading allocates many small containers and no cycles: the cyclic collector would
    rescan the growing heap again and again (measured: half the load time of 10,000 resources)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


__all__ = ["convert_param", "load_stack", "parse_param_assignment", "read_document", "resolve"]
