"""The TOML writer `iacloud convert` uses: what it writes reads back into exactly the
document's values, whatever they are, and reads as a person would write it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iacloud.loading.document import StackDocument
from iacloud.toml_writer import TomlWriteError, write_document

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_text = st.text(max_size=40)
_scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    _text,
    st.sampled_from(['"""', 'a"', 'a""', "\\", "line\nline", "x\r\ny", "\x7f", "ü\u202e", "\t\n"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=10,
)
_entries = st.dictionaries(_text, st.dictionaries(_text, _values, max_size=5), max_size=4)


@settings(max_examples=120, deadline=None)
@given(
    name=_text,
    description=_text,
    parameters=_entries,
    resources=_entries,
    outputs=_entries,
    notes=st.lists(_text, max_size=3),
)
def test_written_documents_read_back_exactly(
    name: str, description: str, parameters, resources, outputs, notes
) -> None:
    doc = StackDocument(
        path=Path("t.yaml"),
        version="2021-04-16",
        name=name,
        description=description,
        parameters=parameters,
        resources=resources,
        outputs=outputs,
    )
    first = next(iter(resources), None)
    text = write_document(
        doc, header=notes, notes={("resources", first): notes} if first is not None else {}
    )
    back = tomllib.loads(text)
    assert back["version"] == 1
    assert back["name"] == name
    assert back.get("description", "") == description
    assert back.get("parameters", {}) == parameters
    assert back.get("resources", {}) == resources
    assert back.get("outputs", {}) == outputs


def test_stack_reads_as_written_by_hand() -> None:
    doc = StackDocument(
        path=Path("t.yaml"),
        version="2021-04-16",
        name="web",
        resources={
            "web": {
                "type": "server",
                "image": {"get_resource": "base"},
                "user_data": "#!/bin/sh\necho hi\n",
                "networks": [{"network": {"get_resource": f"lan{i}"}} for i in range(4)],
            }
        },
    )
    text = write_document(doc, ["Converted from t.yaml"], {("resources", "web"): ["a note"]})
    assert text.startswith('# Converted from t.yaml\n\nversion = 1\nname = "web"\n')
    assert '# a note\n[resources.web]\ntype = "server"\n' in text
    assert 'image = { get_resource = "base" }\n' in text
    assert 'user_data = """\n#!/bin/sh\necho hi\n"""\n' in text
    assert 'networks = [\n    { network = { get_resource = "lan0" } },\n' in text


def test_values_toml_cannot_hold_are_refused() -> None:
    doc = StackDocument(path=Path("t"), version=1, name="x", resources={"a": {"v": None}})
    with pytest.raises(TomlWriteError, match="no null"):
        write_document(doc)
