"""The TOML front on its own: tomllib's errors made specific (the one place that reads their
wording), and a file turned into the neutral StackDocument the rest of loading consumes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from iacloud.loading.diagnostics import Sink
from iacloud.loading.toml_front import read_env_file, read_stack, toml_error_message

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _tomllib_message(text: str) -> str:
    with pytest.raises(tomllib.TOMLDecodeError) as info:
        tomllib.loads(text)
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[resources.a]\ntype = "x"\n[resources.a]\ntype = "y"\n',
            "duplicate resource 'a' (line 3, column 13)",
        ),
        ("[parameters.p]\n[parameters.p]\n", "duplicate parameter 'p' (line 2, column 14)"),
        ("[outputs.o]\n[outputs.o]\n", "duplicate output 'o' (line 2, column 11)"),
        ("[provider.libvirt]\n[provider.libvirt]\n", "duplicate provider 'libvirt'"),
        ("[a.b.c]\n[a.b.c]\n", "duplicate table [a.b.c] (line 2, column 7)"),
        (
            '[resources.a]\ntype = "x"\ntype = "y"\n',
            "duplicate key 'type' in [resources.a] (line 3, column",
        ),
        ('name = "a"\nname = "b"\n', "duplicate key 'name' (line 2, column"),
        ("x = \n", "invalid TOML: Invalid value (at line 1, column 5)"),
    ],
)
def test_toml_errors_are_made_specific(text: str, expected: str) -> None:
    assert expected in toml_error_message(_tomllib_message(text), text)


def test_an_unknown_wording_falls_back_to_tomllib_s_own() -> None:
    assert toml_error_message("Something new (at line 2, column 3)", "") == (
        "invalid TOML: Something new (at line 2, column 3)"
    )


def test_read_stack_makes_the_neutral_document(tmp_path: Path) -> None:
    path = tmp_path / "web-tier.toml"
    path.write_text(
        'version = 1\ndescription = "d"\n'
        '[parameters.n]\ntype = "number"\ndefault = 2\n'
        '[resources.b]\ntype = "t"\nsize = 1\n'
        '[resources.a]\ntype = "t"\ncount = { get_param = "n" }\n'
        '[outputs.o]\nvalue = { get_resource = "a" }\n'
    )
    sink = Sink(str(path))
    doc = read_stack(path, sink)
    assert sink.items == []
    assert doc is not None
    assert (doc.name, doc.version, doc.description) == ("web-tier", 1, "d")  # name: file's
    assert doc.resources["a"] == {"type": "t", "count": {"get_param": "n"}}
    assert doc.outputs == {"o": {"value": {"get_resource": "a"}}}
    assert doc.positions[("resources", "b")] == 0 and doc.positions[("resources", "a")] == 1


def test_read_stack_reports_and_keeps_well_formed_sections(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('version = 2\nname = "ok"\n[resources.a]\ntype = "t"\n')
    sink = Sink(str(path))
    doc = read_stack(path, sink)
    assert doc is not None and doc.resources == {"a": {"type": "t"}}
    assert [d.message for d in sink.items] == [
        "unsupported stack format version: expected 1, found 2 (integer)"
    ]


def test_unreadable_files_are_reported_not_raised(tmp_path: Path) -> None:
    sink = Sink("stack.toml")
    assert read_stack(tmp_path / "missing.toml", sink) is None
    bad = tmp_path / "env.toml"
    bad.write_text("[parameters]\nx = 1\nx = 2\n")
    assert read_env_file(bad, sink) is None
    assert [(d.message.split(" (")[0], d.file) for d in sink.items] == [
        ("stack file not found", "stack.toml"),  # the sink's file: the stack's
        ("duplicate key 'x' in [parameters]", str(bad)),
    ]
