"""The one masking implementation: plans and outputs say `(sensitive)`, the loader's messages
`****`, and both mask the longest hidden value first."""

from __future__ import annotations

from iacloud.errors import UserError
from iacloud.loading.diagnostics import GroupSink, Sink, fail
from iacloud.redact import DIAGNOSTIC_MASK, MASK, Redactor


def test_values_masked_longest_first_at_any_depth() -> None:
    r = Redactor(["pw", "pw-long", ""])
    assert r.text("a pw-long b pw") == f"a {MASK} b {MASK}"
    assert r.value({"k": ["pw", 1, True], "n": None}) == {"k": [MASK, 1, True], "n": None}
    assert Redactor(["8080"]).value([8080, 80]) == [MASK, 80]


def test_short_values_left_alone_when_asked() -> None:
    r = Redactor(["ab", "abcd"], mask=DIAGNOSTIC_MASK, min_length=3)
    assert r.text("ab abcd") == f"ab {DIAGNOSTIC_MASK}"


def test_fail_masks_sorts_in_file_order_and_merges_groups() -> None:
    sink = Sink("s.toml")
    sink.add("output broken", "outputs.o")
    group = GroupSink("s.toml", "resources.web")
    for i in range(6):
        group.add("bad size", f"resources.web[{i}]", "size")
    for i in range(5):
        group.add(f"bad name {i}", f"resources.web[{i}]", "name")
    group.flush_into(sink)
    sink.add("value s3cret is wrong", "parameters.pw")
    try:
        fail(sink, {"s3cret"}, {("resources", "web"): 0})
    except UserError as exc:
        lines = [(d.address, d.field, d.message, d.hint) for d in exc.diagnostics]
    assert lines == [
        ("parameters.pw", None, f"value {DIAGNOSTIC_MASK} is wrong", None),
        ("resources.web[0]", "size", "bad size", "the same in 5 other instances"),
        ("resources.web[0]", "name", "bad name 0", None),
        ("resources.web[1]", "name", "bad name 1", None),
        ("resources.web[2]", "name", "bad name 2", None),
        ("resources.web", "name", "2 more instances with problems in this field", None),
        ("outputs.o", None, "output broken", None),
    ]
