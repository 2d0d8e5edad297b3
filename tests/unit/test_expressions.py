"""Heat's intrinsic functions on their own: parsing one-key tables, evaluating with a resolver,
values known only after apply, %index% substitution and the JSON round trip."""

from __future__ import annotations

from typing import Any

import pytest

from iacloud import expressions as ex


class World(ex.Resolver):
    """Parameters, ids and attributes from dicts; a missing id or attribute is not known yet."""

    def __init__(
        self,
        params: dict[str, Any] | None = None,
        ids: dict[str, str] | None = None,
        attributes: dict[tuple[str, str], Any] | None = None,
        groups: dict[str, list[str]] | None = None,
    ) -> None:
        self.params = params or {}
        self.ids = ids or {}
        self.attributes = attributes or {}
        self.groups = groups or {}

    def param(self, name: str) -> Any:
        return self.params[name]

    def instances(self, name: str) -> list[str] | None:
        return self.groups.get(name)

    def resource_id(self, address: str) -> Any:
        return self.ids.get(address, ex.Unknown(ex.GetResource(address)))

    def attribute(self, address: str, attribute: str) -> Any:
        return self.attributes.get(
            (address, attribute), ex.Unknown(ex.GetAttr(address, None, attribute))
        )


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ({"get_param": "size"}, ex.GetParam("size")),
        ({"get_param": ["net", "cidr", 0]}, ex.GetParam("net", ("cidr", 0))),
        ({"get_resource": "web[2]"}, ex.GetResource("web", 2)),
        ({"get_attr": ["db", "addresses", "lan"]}, ex.GetAttr("db", None, "addresses", ("lan",))),
        (
            {"str_replace": {"template": "$X", "params": {"$X": {"get_param": "x"}}}},
            ex.StrReplace("$X", {"$X": ex.GetParam("x")}),
        ),
        ({"list_join": [",", ["a", "b"]]}, ex.ListJoin(",", (["a", "b"],))),
        # not a function: two keys, or an unknown key, stay tables
        ({"get_param": "a", "x": 1}, {"get_param": "a", "x": 1}),
        ({"get_parm": "a"}, {"get_parm": "a"}),
        ([1, {"get_resource": "a"}], [1, ex.GetResource("a")]),
    ],
)
def test_parse(raw: Any, parsed: Any) -> None:
    assert ex.parse(raw) == parsed


@pytest.mark.parametrize(
    ("raw", "message", "path"),
    [
        ({"disk": {"get_param": 3}}, "get_param expects a parameter name, found 3", "disk"),
        ({"a": [{"get_resource": ["x"]}]}, "get_resource expects a resource name", "a[0]"),
        ({"get_attr": ["db"]}, "get_attr expects [resource, attribute, key...]", "v"),
        ({"get_resource": "web[x]"}, "expected a resource name such as 'web'", "v"),
        ({"str_replace": {"template": "t"}}, "str_replace expects { template = ...", "v"),
        ({"list_join": [","]}, "list_join expects [delimiter, [items...]]", "v"),
    ],
)
def test_parse_errors_say_what_and_where(raw: Any, message: str, path: str) -> None:
    with pytest.raises(ex.ExpressionError) as info:
        ex.parse(raw, "v" if path == "v" else "")
    assert message in str(info.value)
    assert info.value.path == path


def test_evaluate_known_values() -> None:
    world = World(
        params={"net": {"cidr": ["198.18.0.0/24"]}},
        ids={"a": "id-a", "web[0]": "w0", "web[1]": "w1"},
        attributes={("a", "ip"): "198.18.0.5"},
        groups={"web": ["web[0]", "web[1]"]},
    )
    value = ex.parse(
        {
            "cidr": {"get_param": ["net", "cidr", 0]},
            "id": {"get_resource": "a"},
            "all": {"get_resource": "web"},
            "one": {"get_resource": "web[1]"},
            "url": {
                "str_replace": {
                    "template": "http://$IP:$I/",
                    "params": {"$IP": {"get_attr": ["a", "ip"]}, "$I": 8080},
                }
            },
            "csv": {"list_join": [",", {"get_resource": "web"}, [True, 2]]},
        }
    )
    assert ex.evaluate(value, world) == {
        "cidr": "198.18.0.0/24",
        "id": "id-a",
        "all": ["w0", "w1"],
        "one": "w1",
        "url": "http://198.18.0.5:8080/",  # the longest key first: $IP is not eaten by $I
        "csv": "w0,w1,true,2",
    }


def test_values_known_after_apply_stay_expressions() -> None:
    world = World(ids={"web[0]": "w0"}, groups={"web": ["web[0]", "web[1]"]})
    value = ex.parse(
        {
            "group": {"get_resource": "web"},
            "joined": {"list_join": ["-", ["x", {"get_attr": ["db", "ip"]}]]},
        }
    )
    out = ex.evaluate(value, world)
    assert out["group"] == ex.Unknown(ex.GetResource("web"))
    assert isinstance(out["joined"], ex.Unknown)
    assert ex.has_unknown(out) and not ex.has_unknown({"a": [1, "b"]})
    # once the world knows more, the remaining expression evaluates
    later = World(ids={"web[0]": "w0", "web[1]": "w1"}, attributes={("db", "ip"): "10"})
    later.groups = {"web": ["web[0]", "web[1]"]}
    assert ex.evaluate(out, later) == {"group": ["w0", "w1"], "joined": "x-10"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"get_param": ["net", "nope"]}, "parameter 'net' has no key 'nope'"),
        ({"str_replace": {"template": 1, "params": {}}}, "str_replace needs a string template"),
        ({"list_join": [",", [{"a": 1}]]}, "expected a string or number"),
    ],
)
def test_evaluation_errors(raw: Any, message: str) -> None:
    with pytest.raises(ex.ExpressionError, match=message):
        ex.evaluate(ex.parse(raw), World(params={"net": {"cidr": "x"}}))


def test_substitute_index_reaches_keys_and_references() -> None:
    raw = {"name": "web-%index%", "%index%-key": [{"get_resource": "disk[%index%]"}]}
    assert ex.substitute_index(raw, 3) == {"name": "web-3", "3-key": [{"get_resource": "disk[3]"}]}


def test_json_round_trip_and_walk() -> None:
    value = {
        "a": ex.Unknown(ex.GetAttr("db", 1, "addresses", ("lan",))),
        "b": [ex.StrReplace("$X", {"$X": ex.GetParam("p", ("k",))})],
        "c": ex.ListJoin(",", (ex.GetResource("web"),)),
    }
    data = ex.to_json(value)
    assert data["a"] == {"__unknown__": {"get_attr": ["db[1]", "addresses", "lan"]}}
    assert ex.from_json(data) == value
    kinds = [type(node).__name__ for node in ex.walk(value)]
    assert kinds == ["GetAttr", "StrReplace", "GetParam", "ListJoin", "GetResource"]


@pytest.mark.parametrize(
    ("node", "text"),
    [
        (ex.GetAttr("web", 0, "addresses", ("lan",)), "get_attr web[0].addresses.lan"),
        (ex.GetResource("net"), "get_resource net"),
        (ex.GetParam("size"), "get_param size"),
    ],
)
def test_describe(node: Any, text: str) -> None:
    assert ex.describe(node) == text
    assert ex.Unknown(node).describe() == f"(known after apply: {text})"


def test_unknown_arguments_survive_a_plan_file() -> None:
    """A str_replace whose param was unknown at plan time round-trips through the plan's JSON
    and evaluates once the resource exists (it used to stay a raw {"__unknown__": ...})."""
    value = ex.Unknown(ex.StrReplace("a $X", {"$X": ex.Unknown(ex.GetAttr("p", None, "ip"))}))
    back = ex.from_json(ex.to_json(value))

    class Done(ex.Resolver):
        def attribute(self, address: str, attribute: str) -> str:
            return "198.18.0.9"

    assert ex.evaluate(back, Done()) == "a 198.18.0.9"
