"""YAML read safely, within the same limits as TOML (`iacloud.limits`), for HOT templates and
Heat environment files.

PyYAML's safe loader (libyaml's C parser where available) constructs only plain data, but three
things still need bounding before anything walks the result: nesting (its composer and
constructor recurse), aliases (`&a`/`*a` make a DAG that expands exponentially: a "billion laughs"
document of a few hundred bytes), and recursive aliases (a list that holds itself). So the text is
read in three passes: the event stream (no recursion) checks nesting depth and that there is one
document; the composed node graph is walked once without recursion, counting what aliases expand
to, refusing cycles and duplicate keys, and noting the line of each mapping key for diagnostics;
only then is it constructed. Dates stay strings (HOT versions are dates), and tags that make
anything but plain data (`!!python/...`, `!!binary`, `!!set`, ...) are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from iacloud import limits
from iacloud.loading.diagnostics import Sink

# mapping keys, sequence items and scalars after aliases are expanded: a 16 MiB document of
# plain data has about this many
MAX_NODES = 2_000_000
# how deep key lines are noted (resources.NAME.properties.FIELD.KEY)
_LINE_DEPTH = 6

_Base: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlError(ValueError):
    """A YAML problem meant for the user as it is; `line` is 1-based where known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text} (line {self.line})" if self.line else text


class _Loader(_Base):  # type: ignore[misc, valid-type]
    """Safe loading, dates as the text written, and no tag that builds non-plain data."""


def _as_text(loader: Any, node: yaml.Node) -> str:
    return str(loader.construct_scalar(node))


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml") else tag


def _refused(loader: Any, node: yaml.Node) -> Any:
    raise YamlError(f"the YAML tag {_short_tag(node.tag)} is not allowed", _line(node.start_mark))


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _as_text)
for _tag in ("binary", "set", "omap", "pairs"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refused)


def _line(mark: Any) -> int | None:
    return mark.line + 1 if mark is not None else None


def _check_events(text: str) -> None:
    depth = 0
    documents = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > limits.MAX_DEPTH:
                raise YamlError(
                    f"values are nested more than {limits.MAX_DEPTH} levels deep",
                    _line(event.start_mark),
                )
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise YamlError("expected one YAML document, found more", _line(event.start_mark))


def _key_text(node: yaml.Node) -> str | None:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else None


def _walk(root: yaml.Node) -> dict[tuple[str, ...], int]:
    """Expanded size and depth bounded, no cycles, no duplicate keys; the line of each key."""
    lines: dict[tuple[str, ...], int] = {}
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    # (node, path or None beyond _LINE_DEPTH, children done?)
    todo: list[tuple[yaml.Node, tuple[str, ...] | None, bool]] = [(root, (), False)]
    while todo:
        node, path, done = todo.pop()
        ident = id(node)
        if isinstance(node, yaml.ScalarNode):
            size[ident], depth[ident] = 1, 0
            continue
        children = (
            [c for pair in node.value for c in pair]
            if isinstance(node, yaml.MappingNode)
            else list(node.value)
        )
        if done:
            on_path.discard(ident)
            total = 1 + sum(size[id(c)] for c in children)
            if total > MAX_NODES:
                raise YamlError(
                    f"the document expands to more than {MAX_NODES:,} values "
                    "(aliases repeat what they name)",
                    _line(node.start_mark),
                )
            size[ident] = total
            depth[ident] = 1 + max((depth[id(c)] for c in children), default=0)
            if depth[ident] > limits.MAX_DEPTH:
                raise YamlError(
                    f"values are nested more than {limits.MAX_DEPTH} levels deep (through aliases)",
                    _line(node.start_mark),
                )
            continue
        if ident in size:
            continue  # an alias to a node already measured
        if ident in on_path:
            raise YamlError("a recursive alias: a value contains itself", _line(node.start_mark))
        on_path.add(ident)
        todo.append((node, path, True))
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                name = _key_text(key)
                if name is not None and key.tag != "tag:yaml.org,2002:merge":
                    line = _line(key.start_mark) or 0
                    if name in seen:
                        raise YamlError(
                            f"duplicate key {name!r} (first on line {seen[name]})", line
                        )
                    seen[name] = line
                child = None
                if path is not None and name is not None and len(path) < _LINE_DEPTH:
                    child = (*path, name)
                    lines.setdefault(child, _line(key.start_mark) or 0)
                todo.append((key, None, False))
                todo.append((value, child, False))
        else:
            for i, item in enumerate(node.value):
                child = (*path, str(i)) if path is not None and len(path) < _LINE_DEPTH else None
                if child is not None:
                    lines.setdefault(child, _line(item.start_mark) or 0)
                todo.append((item, child, False))
    return lines


def parse_yaml(text: str) -> tuple[Any, dict[tuple[str, ...], int]]:
    """One YAML document as plain data, and the line of each mapping key by its path (first
    levels only). Raises YamlError (or limits.InputError) with a message for the user."""
    try:
        _check_events(text)
        node = yaml.compose(text, Loader=_Loader)
        if node is None:
            return None, {}
        lines = _walk(node)
        loader = _Loader("")
        try:
            value = loader.construct_document(node)
        finally:
            loader.dispose()
    except YamlError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if problem.startswith("could not determine a constructor for the tag"):
            tag = problem.rsplit(" ", 1)[-1].strip("'")
            raise YamlError(f"the YAML tag {_short_tag(tag)} is not allowed", _line(mark)) from None
        if "maximum nesting depth" in problem:
            problem = f"values are nested more than {limits.MAX_DEPTH} levels deep"
            raise YamlError(problem, _line(mark)) from None
        raise YamlError(f"invalid YAML: {problem}", _line(mark)) from None
    except yaml.YAMLError as exc:
        raise YamlError(f"invalid YAML: {exc}") from None
    except RecursionError:
        raise YamlError(f"values are nested more than {limits.MAX_DEPTH} levels deep") from None
    except ValueError:  # int() of a huge literal: Python's digit limit
        raise YamlError(f"an integer is beyond the 64-bit range (±{limits.MAX_INT})") from None
    limits.check_value(value)
    return value, lines


def read_yaml_file(
    path: Path, sink: Sink, what: str
) -> tuple[Any, dict[tuple[str, ...], int]] | None:
    """A YAML file as plain data with its key lines; None when unreadable (reported)."""
    file = str(path)
    try:
        return parse_yaml(limits.read_text(path))
    except FileNotFoundError:
        sink.add(f"{what} not found", file=file)
    except limits.InputError as exc:
        sink.add(str(exc).replace("the file", f"the {what}", 1), file=file)
    except YamlError as exc:
        sink.add(super(YamlError, exc).__str__(), file=file, line=exc.line)
    return None
