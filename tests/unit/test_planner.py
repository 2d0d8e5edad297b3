"""Planner: the action table, field diffs with their disruption, replacement reasons."""

from __future__ import annotations

import pytest
from fake_provider import Disk, Thing

from iacloud.diff import diff_inputs, normalize_inputs
from iacloud.expressions import GetAttr, Unknown
from iacloud.plan import Action
from iacloud.planner import choose_action
from iacloud.schema import Disruption

CASES = [
    # exists, desired, forces, changed, replace_requested, tainted, cbd, expected
    (False, True, False, False, False, False, False, Action.CREATE),
    (False, False, False, False, False, False, False, Action.NOOP),
    (True, False, False, False, False, False, False, Action.DELETE),
    (True, True, False, False, False, False, False, Action.NOOP),
    (True, True, False, True, False, False, False, Action.UPDATE),
    (True, True, True, True, False, False, False, Action.DELETE_CREATE),
    (True, True, True, True, False, False, True, Action.CREATE_DELETE),
    (True, True, False, False, True, False, False, Action.DELETE_CREATE),
    (True, True, False, False, False, True, False, Action.DELETE_CREATE),
    (True, True, False, True, False, True, True, Action.CREATE_DELETE),
]


@pytest.mark.parametrize("exists,desired,forces,changed,requested,tainted,cbd,expected", CASES)
def test_choose_action(exists, desired, forces, changed, requested, tainted, cbd, expected):
    got = choose_action(
        exists=exists,
        desired=desired,
        forces_replacement=forces,
        changed=changed,
        replace_requested=requested,
        tainted=tainted,
        create_before_destroy=cbd,
    )
    assert got is expected


DIFFS = [
    # before, after, expected [(field, disruption, forces)]
    ({"size": 1}, {"size": 1}, []),
    ({"size": 1}, {"size": 2}, [("size", Disruption.LIVE, False)]),
    ({"flavor": "small"}, {"flavor": "big"}, [("flavor", Disruption.RESTART, False)]),
    ({"name": "a"}, {"name": "b"}, [("name", Disruption.REPLACE, True)]),
    (
        {"name": "a", "size": 1},
        {"name": "a", "size": 1, "tags": ["x"]},
        [("tags", Disruption.LIVE, False)],
    ),
]


@pytest.mark.parametrize("before,after,expected", DIFFS)
def test_diff_inputs(before, after, expected):
    b = normalize_inputs(Thing, before)
    a = normalize_inputs(Thing, after)
    got = [(f.field, f.disruption, f.forces_replacement) for f in diff_inputs(Thing, b, a)]
    assert got == expected


def test_unknown_value_counts_as_change_and_keeps_schema_cost():
    before = normalize_inputs(Thing, {"ref": "abc"})
    after = normalize_inputs(Thing, {"ref": Unknown(GetAttr("x", None, "id"))})
    (change,) = diff_inputs(Thing, before, after)
    assert change.field == "ref" and change.forces_replacement
    assert change.after == {"__unknown__": {"get_attr": ["x", "id"]}}


def test_normalize_fills_defaults_and_keeps_unknowns():
    out = normalize_inputs(Disk, {"size_gib": Unknown(GetAttr("x", None, "size"))})
    assert isinstance(out["size_gib"], Unknown)
    assert out["source"] is None


def test_normalize_rejects_bad_known_values_even_with_unknowns():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        normalize_inputs(Thing, {"size": -1, "ref": Unknown(GetAttr("x", None, "id"))})
