"""Stack loading: every kind of mistake becomes a located diagnostic, and good stacks resolve."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from iacloud import expressions as ex
from iacloud.config import StackConfig
from iacloud.errors import Diagnostic, UserError
from iacloud.loading import convert_param, load_stack, parse_param_assignment
from iacloud.provider import Registry


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.discover()


def write(tmp_path: Path, text: str, name: str = "stack.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(
    tmp_path: Path,
    registry: Registry,
    text: str,
    params: Sequence[str] = (),
    env: Sequence[str] = (),
) -> StackConfig:
    envs = [write(tmp_path, e, f"env{i}.toml") for i, e in enumerate(env)]
    return load_stack(write(tmp_path, text), registry, list(params), envs)


def errors(
    tmp_path: Path,
    registry: Registry,
    text: str,
    params: Sequence[str] = (),
    env: Sequence[str] = (),
) -> list[Diagnostic]:
    with pytest.raises(UserError) as info:
        load(tmp_path, registry, text, params, env)
    assert info.value.diagnostics
    return info.value.diagnostics


@dataclass(frozen=True)
class Expect:
    """What one diagnostic must say; None means "anything"."""

    message: str
    address: str | None = None
    field: str | None = None
    hint: str | None = None

    def matches(self, d: Diagnostic) -> bool:
        return (
            self.message in d.message
            and (self.address is None or d.address == self.address)
            and (self.field is None or d.field == self.field)
            and (self.hint is None or (d.hint is not None and self.hint in d.hint))
        )


def assert_reported(diagnostics: list[Diagnostic], *expected: Expect) -> None:
    text = "\n".join(str(d) for d in diagnostics)
    for e in expected:
        assert any(e.matches(d) for d in diagnostics), f"{e} not in:\n{text}"


HEAD = 'version = 1\n[resources.lan]\ntype = "fake_thing"\n'
COUNTED_DATA = '[resources.data]\ntype = "fake_disk"\ncount = 2\nsize_gib = 1\n'

# one case per kind of mistake: (id, stack text, -p assignments, expected diagnostic)
MISTAKES: list[tuple[str, str, list[str], Expect]] = [
    (
        "toml-syntax",
        "version = 1\nname = \n",
        [],
        Expect("invalid TOML: Invalid value (at line 2, column 8)"),
    ),
    (
        "duplicate-resource",
        HEAD + '[resources.lan]\ntype = "fake_thing"\n',
        [],
        Expect("duplicate resource 'lan' (line 4"),
    ),
    (
        "duplicate-key",
        HEAD + "size = 1\nsize = 2\n",
        [],
        Expect("duplicate key 'size' in [resources.lan] (line 5"),
    ),
    ("bad-version", 'version = 2\nname = "x"\n', [], Expect("expected 1", field="version")),
    (
        "version-as-string",
        'version = "1"\n',
        [],
        Expect("valid integer", field="version"),
    ),
    ("missing-version", 'name = "x"\n', [], Expect("missing required field 'version'")),
    (
        "unknown-top-level-key",
        'version = 1\n[resorces.a]\ntype = "fake_thing"\n',
        [],
        Expect("unknown field 'resorces'", hint="did you mean 'resources'?"),
    ),
    (
        "bad-stack-name",
        'version = 1\nname = "-lab"\n',
        [],
        Expect("a stack name is 1 to 63", field="name"),
    ),
    (
        "misspelled-resource-field",
        HEAD + "sise = 3\n",
        [],
        Expect("unknown field 'sise'", "resources.lan", "sise", "did you mean 'size'?"),
    ),
    (
        "misspelled-depends-on",
        HEAD + 'dependson = ["lan"]\n',
        [],
        Expect("unknown field 'dependson'", "resources.lan", hint="did you mean 'depends_on'?"),
    ),
    (
        "heat-style-properties-table",
        HEAD + "[resources.lan.properties]\nsize = 3\n",
        [],
        Expect("unknown field 'properties'", "resources.lan", hint="directly in the resource"),
    ),
    (
        "unknown-type",
        'version = 1\n[resources.a]\ntype = "fake_thnig"\n',
        [],
        Expect("unknown resource type 'fake_thnig'", "resources.a", "type", "'fake_thing'"),
    ),
    (
        "unknown-resource-reference",
        HEAD + '[resources.b]\ntype = "fake_thing"\nref = { get_resource = "lna" }\n',
        [],
        Expect("unknown resource 'lna'", "resources.b", "ref", "did you mean 'lan'?"),
    ),
    (
        "unknown-parameter",
        'version = 1\n[parameters.web_count]\ntype = "number"\ndefault = 1\n'
        '[resources.a]\ntype = "fake_thing"\nsize = { get_param = "web_cout" }\n',
        [],
        Expect("unknown parameter 'web_cout'", "resources.a", "size", "'web_count'"),
    ),
    (
        "unknown-parameter-nested",
        HEAD + 'tags = ["a", { get_param = "nope" }]\n',
        [],
        Expect("unknown parameter 'nope'", "resources.lan", "tags[1]"),
    ),
    (
        "unknown-attribute",
        HEAD + '[resources.b]\ntype = "fake_thing"\nref = { get_attr = ["lan", "nmae"] }\n',
        [],
        Expect("has no attribute 'nmae'", "resources.b", "ref", "did you mean 'name'?"),
    ),
    (
        "index-out-of-range",
        COUNTED_DATA.replace("[resources", "version = 1\n[resources", 1)
        + '[resources.b]\ntype = "fake_thing"\nref = { get_resource = "data[2]" }\n',
        [],
        Expect("index 2 is out of range: 'data' has count 2 (indices 0 to 1)", "resources.b"),
    ),
    (
        "index-of-uncounted",
        HEAD + '[resources.b]\ntype = "fake_thing"\nref = { get_resource = "lan[0]" }\n',
        [],
        Expect("resource 'lan' has no count", "resources.b", "ref", "write 'lan'"),
    ),
    (
        "cycle-shown-in-full",
        "version = 1\n"
        '[resources.a]\ntype = "fake_thing"\nref = { get_resource = "b" }\n'
        '[resources.b]\ntype = "fake_thing"\nrefs = [{ get_attr = ["c", "id"] }]\n'
        '[resources.c]\ntype = "fake_thing"\ndepends_on = ["a"]\n',
        [],
        Expect("dependency cycle: a -> b -> c -> a", "resources.a"),
    ),
    (
        "depends-on-itself",
        HEAD + 'depends_on = ["lan"]\n',
        [],
        Expect("dependency cycle: lan -> lan", "resources.lan"),
    ),
    (
        "depends-on-unknown",
        HEAD + 'depends_on = ["lna"]\n',
        [],
        Expect("unknown resource 'lna'", "resources.lan", "depends_on[0]", "'lan'"),
    ),
    (
        "count-not-a-number",
        HEAD + 'count = "abc"\n',
        [],
        Expect('expected an integer or { get_param = "name" }', "resources.lan", "count"),
    ),
    (
        "count-negative",
        HEAD + "count = -1\n",
        [],
        Expect("count must be between 0 and 10000, found -1", "resources.lan", "count"),
    ),
    (
        "count-too-large",
        HEAD + "count = 10001\n",
        [],
        Expect("count must be between 0 and 10000", "resources.lan", "count"),
    ),
    (
        "count-float",
        HEAD + "count = 2.5\n",
        [],
        Expect("expected an integer", "resources.lan", "count"),
    ),
    (
        "count-from-string-parameter",
        'version = 1\n[parameters.n]\ntype = "string"\ndefault = "3"\n'
        '[resources.a]\ntype = "fake_thing"\ncount = { get_param = "n" }\n',
        [],
        Expect('count must be an integer, found "3" (string)', "resources.a", "count"),
    ),
    (
        "count-from-resource",
        HEAD + 'count = { get_attr = ["lan", "id"] }\n',
        [],
        Expect("count must be known before anything is created", "resources.lan", "count"),
    ),
    (
        "index-in-uncounted-resource",
        HEAD + 'name = "web-%index%"\n',
        [],
        Expect("%index% is only replaced in a counted resource", "resources.lan", "name"),
    ),
    (
        "misspelled-function",
        HEAD + 'refs = [{ get_reource = "lan" }]\n',
        [],
        Expect("unknown function 'get_reource'", "resources.lan", "refs[0]", "'get_resource'"),
    ),
    (
        "malformed-get-attr",
        HEAD + "ref = { get_attr = 5 }\n",
        [],
        Expect("get_attr expects [resource, attribute, key...], found 5", "resources.lan", "ref"),
    ),
    (
        "missing-required-field",
        'version = 1\n[resources.d]\ntype = "fake_disk"\n',
        [],
        Expect("missing required field 'size_gib'", "resources.d", "size_gib"),
    ),
    (
        "wrong-field-type",
        HEAD + 'size = "big"\n',
        [],
        Expect(
            'valid integer, unable to parse string as an integer, found "big" (string)',
            "resources.lan",
            "size",
        ),
    ),
    (
        "field-path-inside-list",
        HEAD + 'tags = ["a", 5]\n',
        [],
        Expect("valid string, found 5 (integer)", "resources.lan", "tags[1]"),
    ),
    (
        "field-constraint",
        HEAD + "size = -1\n",
        [],
        Expect("greater than or equal to 0, found -1", "resources.lan", "size"),
    ),
    (
        "resource-is-a-string",
        'version = 1\n[resources]\nweb = "server"\n',
        [],
        Expect(
            'expected a table (type = "...", then its properties), found "server"', "resources.web"
        ),
    ),
    (
        "bad-resource-name",
        'version = 1\n[resources."web server"]\ntype = "fake_thing"\n',
        [],
        Expect('invalid name "web server"', "resources.web server"),
    ),
    (
        "parameters-is-a-list",
        "version = 1\nparameters = [1, 2]\n",
        [],
        Expect("valid dictionary, found [1, 2] (array)", field="parameters"),
    ),
    (
        "unknown-parameter-key",
        'version = 1\n[parameters.a]\ntype = "string"\ndefualt = "x"\n',
        [],
        Expect("unknown field 'defualt'", "parameters.a", "defualt", "did you mean 'default'?"),
    ),
    (
        "unknown-parameter-type",
        'version = 1\n[parameters.a]\ntype = "float"\n',
        [],
        Expect("'string', 'number', 'boolean', 'list' or 'map'", "parameters.a", "type"),
    ),
    (
        "default-of-wrong-type",
        'version = 1\n[parameters.a]\ntype = "number"\ndefault = "3"\n',
        [],
        Expect("bad default: expected a number, found string", "parameters.a", "default"),
    ),
    (
        "unknown-output-key",
        HEAD + '[outputs.o]\nvalue = 1\ndescripton = "x"\n',
        [],
        Expect("unknown field 'descripton'", "outputs.o", hint="did you mean 'description'?"),
    ),
    (
        "output-unknown-attribute",
        HEAD + '[outputs.o]\nvalue = { get_attr = ["lan", "ide"] }\n',
        [],
        Expect("has no attribute 'ide'", "outputs.o", "value", "did you mean 'id'?"),
    ),
    (
        "output-index-out-of-range",
        "version = 1\n" + COUNTED_DATA + '[outputs.o]\nvalue = { get_resource = "data[5]" }\n',
        [],
        Expect("index 5 is out of range", "outputs.o", "value"),
    ),
    (
        "unknown-provider",
        'version = 1\n[provider.fkae]\npath = "/tmp"\n',
        [],
        Expect("unknown provider 'fkae'", "provider.fkae", hint="did you mean 'fake'?"),
    ),
    (
        "bad-provider-setting",
        "version = 1\n[provider.fake]\npth = 5\n",
        [],
        Expect("unknown field 'pth'", "provider.fake", "pth", "did you mean 'path'?"),
    ),
    (
        "missing-required-parameter",
        'version = 1\n[parameters.key]\ntype = "string"\n',
        [],
        Expect(
            "parameter 'key' has no default and no value was given",
            "parameters.key",
            hint="-p key=VALUE",
        ),
    ),
    (
        "p-unknown-parameter",
        'version = 1\n[parameters.count]\ntype = "number"\ndefault = 1\n',
        ["cuont=2"],
        Expect("unknown parameter 'cuont'", "parameters.cuont", hint="did you mean 'count'?"),
    ),
    (
        "p-without-value",
        "version = 1\n",
        ["count"],
        Expect("-p expects NAME=VALUE, found 'count'"),
    ),
    (
        "p-not-a-number",
        'version = 1\n[parameters.n]\ntype = "number"\ndefault = 1\n',
        ["n=three"],
        Expect('-p n: expected a number, found "three"', "parameters.n"),
    ),
    (
        "p-not-a-boolean",
        'version = 1\n[parameters.b]\ntype = "boolean"\ndefault = true\n',
        ["b=maybe"],
        Expect("-p b: expected a boolean", "parameters.b"),
    ),
    (
        "p-bad-json-list",
        'version = 1\n[parameters.l]\ntype = "list"\ndefault = []\n',
        ["l=[1,"],
        Expect("-p l: expected a JSON array", "parameters.l"),
    ),
    (
        "p-map-not-an-object",
        'version = 1\n[parameters.m]\ntype = "map"\ndefault = {}\n',
        ["m=[1]"],
        Expect("-p m: expected a JSON object", "parameters.m"),
    ),
]


@pytest.mark.parametrize(
    ("text", "params", "expected"),
    [case[1:] for case in MISTAKES],
    ids=[case[0] for case in MISTAKES],
)
def test_mistake_is_reported(
    tmp_path: Path, registry: Registry, text: str, params: list[str], expected: Expect
) -> None:
    diagnostics = errors(tmp_path, registry, text, params)
    assert_reported(diagnostics, expected)
    path = str(tmp_path / "stack.toml")
    assert all(d.file == path for d in diagnostics)


def param_stack(definition: str) -> str:
    return f"version = 1\n[parameters.p]\n{definition}\n"


CONSTRAINTS: list[tuple[str, str, list[str], Expect]] = [
    (
        "range",
        'type = "number"\ndefault = 9\nconstraints = [{ range = { min = 1, max = 8 } }]',
        [],
        Expect(
            "parameter 'p': value 9 violates range { min = 1, max = 8 }: "
            "the value must be in the range 1 to 8",
            "parameters.p",
            "constraints[0]",
        ),
    ),
    (
        "range-min-only",
        'type = "number"\ndefault = 1\nconstraints = [{ range = { min = 2.5 } }]',
        [],
        Expect("the value must be at least 2.5", "parameters.p"),
    ),
    (
        "length-of-string",
        'type = "string"\ndefault = "ab"\nconstraints = [{ length = { min = 3 } }]',
        [],
        Expect('value "ab" violates length { min = 3 }: length 2: the length must be at least 3'),
    ),
    (
        "length-of-list",
        'type = "list"\ndefault = [1, 2, 3]\nconstraints = [{ length = { max = 2 } }]',
        [],
        Expect("length 3: the length must be no greater than 2", "parameters.p"),
    ),
    (
        "allowed-values",
        'type = "string"\ndefault = "huge"\nconstraints = [{ allowed_values = ["s", "m"] }]',
        [],
        Expect('"huge" is not an allowed value ["s", "m"]', "parameters.p"),
    ),
    (
        "allowed-values-of-list-items",
        'type = "list"\ndefault = ["s", "x"]\nconstraints = [{ allowed_values = ["s", "m"] }]',
        [],
        Expect('"x" is not an allowed value', "parameters.p"),
    ),
    (
        "allowed-values-boolean-is-not-one",
        'type = "boolean"\ndefault = true\nconstraints = [{ allowed_values = [1] }]',
        [],
        Expect("true is not an allowed value [1]", "parameters.p"),
    ),
    (
        "allowed-pattern-matches-whole-value",
        'type = "string"\ndefault = "abc1"\nconstraints = [{ allowed_pattern = "[a-z]+" }]',
        [],
        Expect('"abc1" does not match pattern "[a-z]+"', "parameters.p"),
    ),
    (
        "description-replaces-message",
        'type = "number"\ndefault = 0\n'
        'constraints = [{ range = { min = 1 }, description = "at least one web server" }]',
        [],
        Expect("violates range { min = 1 }: at least one web server", "parameters.p"),
    ),
    (
        "value-from-p-is-checked",
        'type = "number"\ndefault = 2\nconstraints = [{ range = { max = 8 } }]',
        ["p=20"],
        Expect("value 20 violates range { max = 8 }", "parameters.p"),
    ),
    (
        "constraint-does-not-apply",
        'type = "string"\ndefault = "a"\nconstraints = [{ range = { min = 1 } }]',
        [],
        Expect(
            "a range constraint applies to number parameters, not string",
            "parameters.p",
            "constraints[0]",
        ),
    ),
    (
        "constraint-with-two-kinds",
        'type = "number"\ndefault = 1\n'
        "constraints = [{ range = { min = 1 }, length = { min = 1 } }]",
        [],
        Expect(
            "exactly one of allowed_values, range, length, allowed_pattern, custom_constraint; "
            "found range, length",
            "parameters.p",
            "constraints[0]",
        ),
    ),
    (
        "constraint-empty-range",
        'type = "number"\ndefault = 1\nconstraints = [{ range = {} }]',
        [],
        Expect("range needs 'min', 'max' or both", "parameters.p", "constraints[0].range"),
    ),
    (
        "constraint-bad-regex",
        'type = "string"\ndefault = "a"\nconstraints = [{ allowed_pattern = "(" }]',
        [],
        Expect("invalid regular expression", "parameters.p", "constraints[0].allowed_pattern"),
    ),
    (
        "constraint-misspelled",
        'type = "number"\ndefault = 1\nconstraints = [{ rnage = { min = 1 } }]',
        [],
        Expect("unknown field 'rnage'", "parameters.p", "constraints[0].rnage", "'range'"),
    ),
]


@pytest.mark.parametrize(
    ("definition", "params", "expected"),
    [case[1:] for case in CONSTRAINTS],
    ids=[case[0] for case in CONSTRAINTS],
)
def test_constraint_violation_is_reported(
    tmp_path: Path, registry: Registry, definition: str, params: list[str], expected: Expect
) -> None:
    assert_reported(errors(tmp_path, registry, param_stack(definition), params), expected)


@pytest.mark.parametrize(
    ("definition", "value"),
    [
        ('type = "number"\nconstraints = [{ range = { min = 1, max = 8 } }]', "8"),
        ('type = "string"\nconstraints = [{ length = { min = 1, max = 3 } }]', "abc"),
        ('type = "string"\nconstraints = [{ allowed_values = ["a", "b"] }]', "b"),
        ('type = "string"\nconstraints = [{ allowed_pattern = "[a-z]+[0-9]?" }]', "web1"),
        ('type = "list"\nconstraints = [{ allowed_pattern = "[a-z]+" }]', "a,b"),
        ('type = "map"\nconstraints = [{ length = { max = 1 } }]', '{"a": 1}'),
    ],
)
def test_constraint_satisfied(
    tmp_path: Path, registry: Registry, definition: str, value: str
) -> None:
    config = load(tmp_path, registry, param_stack(definition), [f"p={value}"])
    assert "p" in config.parameters


ENV_MISTAKES: list[tuple[str, str, Expect]] = [
    (
        "unknown-parameter",
        "[parameters]\nweb_cuont = 2\n",
        Expect("unknown parameter 'web_cuont'", "parameters.web_cuont", hint="'web_count'"),
    ),
    (
        "other-top-level-key",
        "[parameter]\nweb_count = 2\n",
        Expect("unknown field 'parameter'", hint="did you mean 'parameters'?"),
    ),
    (
        "wrong-type",
        '[parameters]\nweb_count = "2"\n',
        Expect("parameter 'web_count': expected a number, found string", "parameters.web_count"),
    ),
    ("toml-syntax", "[parameters\n", Expect("invalid TOML")),
    ("parameters-not-a-table", "parameters = 3\n", Expect("valid dictionary", field="parameters")),
]


@pytest.mark.parametrize(
    ("env_text", "expected"),
    [case[1:] for case in ENV_MISTAKES],
    ids=[case[0] for case in ENV_MISTAKES],
)
def test_env_file_mistake_names_the_env_file(
    tmp_path: Path, registry: Registry, env_text: str, expected: Expect
) -> None:
    stack = 'version = 1\n[parameters.web_count]\ntype = "number"\ndefault = 1\n'
    diagnostics = errors(tmp_path, registry, stack, env=[env_text])
    assert_reported(diagnostics, expected)
    assert all(d.file == str(tmp_path / "env0.toml") for d in diagnostics)


def test_missing_env_file(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, "version = 1\n")
    with pytest.raises(UserError) as info:
        load_stack(path, registry, [], [tmp_path / "nope.toml"])
    assert_reported(info.value.diagnostics, Expect("environment file not found"))
    assert info.value.diagnostics[0].file == str(tmp_path / "nope.toml")


def test_missing_stack_file(tmp_path: Path, registry: Registry) -> None:
    with pytest.raises(UserError) as info:
        load_stack(tmp_path / "absent.toml", registry)
    assert_reported(info.value.diagnostics, Expect("stack file not found"))


def test_stack_file_is_a_directory(tmp_path: Path, registry: Registry) -> None:
    with pytest.raises(UserError) as info:
        load_stack(tmp_path, registry)
    assert_reported(info.value.diagnostics, Expect("cannot read the stack file"))


def test_stack_file_not_utf8(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "bin.toml"
    path.write_bytes(b"version = 1\nname = '\xff\xfe'\n")
    with pytest.raises(UserError) as info:
        load_stack(path, registry)
    assert_reported(info.value.diagnostics, Expect("not a UTF-8 text file"))


def test_file_stem_that_is_not_a_stack_name(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, "version = 1\n", "my.lab.toml")
    with pytest.raises(UserError) as info:
        load_stack(path, registry)
    assert_reported(info.value.diagnostics, Expect('"my.lab" is not a valid stack name'))


SECRET = "s3cr3t-Hunter2"


def test_hidden_value_never_appears_in_any_diagnostic(tmp_path: Path, registry: Registry) -> None:
    stack = f"""
version = 1
[parameters.pw]
type = "string"
hidden = true
default = "{SECRET}"
constraints = [{{ length = {{ min = 100 }} }}, {{ allowed_pattern = "[0-9]+" }},
               {{ allowed_values = ["a"] }}]

[parameters.pw2]
type = "string"
hidden = true

[parameters.n]
type = "number"
hidden = true

[resources.a]
type = "fake_thing"
size = {{ get_param = "pw2" }}
tags = [{{ get_param = "pw2" }}, 5]
count = {{ get_param = "pw2" }}

[resources.b]
type = "fake_thing"
name = {{ list_join = [",", [{{ a = {{ get_param = "pw2" }} }}]] }}
"""
    env = f'[parameters]\npw2 = "{SECRET}"\nn = "{SECRET}"\n'
    diagnostics = errors(tmp_path, registry, stack, params=[f"n={SECRET}"], env=[env])
    text = "\n".join(str(d) for d in diagnostics)
    assert SECRET not in text
    assert "s3cr3t" not in text
    assert "****" in text
    # each problem is still reported, only the value is hidden
    assert_reported(
        diagnostics,
        Expect("parameter 'pw': value **** violates length", "parameters.pw"),
        Expect("violates allowed_pattern", "parameters.pw"),
        Expect("**** is not an allowed value ****", "parameters.pw"),
        Expect("-p n: expected a number, found ****", "parameters.n"),
        Expect("found ****", "resources.a", "size"),
        Expect("count must be an integer, found ****", "resources.a", "count"),
        Expect("expected a string or number", "resources.b", "name"),
    )


def test_hidden_values_are_listed(tmp_path: Path, registry: Registry) -> None:
    stack = (
        "version = 1\n"
        '[parameters.key]\ntype = "string"\nhidden = true\n'
        '[parameters.keys]\ntype = "list"\nhidden = true\ndefault = ["k1", "k2"]\n'
        '[parameters.open]\ntype = "string"\ndefault = "visible"\n'
        '[parameters.flag]\ntype = "boolean"\nhidden = true\ndefault = true\n'
    )
    config = load(tmp_path, registry, stack, ["key=ssh-ed25519 AAAA"])
    # a boolean is not listed: masking every "true" would protect nothing
    assert config.hidden_values == ["ssh-ed25519 AAAA", "k1", "k2"]
    assert config.parameters["key"] == "ssh-ed25519 AAAA"


def test_multiple_errors_collected_in_one_user_error(tmp_path: Path, registry: Registry) -> None:
    stack = """
version = 1
[parameters.web_count]
type = "number"
default = 1
[resources.a]
type = "fake_thing"
sise = 1
[resources.b]
type = "fake_disk"
[resources.c]
type = "fake_thnig"
[resources.d]
type = "fake_thing"
ref = { get_resource = "zz" }
[outputs.o]
value = { get_param = "web_cuont" }
"""
    diagnostics = errors(tmp_path, registry, stack)
    assert_reported(
        diagnostics,
        Expect("unknown field 'sise'", "resources.a"),
        Expect("missing required field 'size_gib'", "resources.b"),
        Expect("unknown resource type 'fake_thnig'", "resources.c"),
        Expect("unknown resource 'zz'", "resources.d"),
        Expect("unknown parameter 'web_cuont'", "outputs.o", hint="did you mean 'web_count'?"),
    )
    assert len(diagnostics) == 5
    # in file order
    assert [d.address for d in diagnostics] == [
        "resources.a",
        "resources.b",
        "resources.c",
        "resources.d",
        "outputs.o",
    ]


def test_top_level_mistake_does_not_hide_others(tmp_path: Path, registry: Registry) -> None:
    stack = 'version = 3\nextra = 1\n[resources.a]\ntype = "fake_thing"\nsise = 1\n'
    assert_reported(
        errors(tmp_path, registry, stack),
        Expect("expected 1", field="version"),
        Expect("unknown field 'extra'"),
        Expect("unknown field 'sise'", "resources.a"),
    )


def test_broken_parameter_does_not_cascade(tmp_path: Path, registry: Registry) -> None:
    stack = (
        'version = 1\n[parameters.n]\ntype = "number"\n'
        '[resources.a]\ntype = "fake_thing"\ncount = { get_param = "n" }\n'
        'size = { get_param = "n" }\nname = "a-%index%"\n'
    )
    diagnostics = errors(tmp_path, registry, stack, ["n=lots"])
    assert [d.message for d in diagnostics] == ['-p n: expected a number, found "lots"']


def test_instance_problems_are_summarised(tmp_path: Path, registry: Registry) -> None:
    # a mistake in a counted resource's template is reported a few times, not 50
    stack = (
        'version = 1\n[resources.web]\ntype = "fake_thing"\ncount = 50\nsize = "big-%index%"\n'
        '[resources.data]\ntype = "fake_disk"\ncount = 50\nsource = "d%index%"\n'
    )
    diagnostics = errors(tmp_path, registry, stack)
    size = [d for d in diagnostics if d.field == "size"]
    assert len(size) == 4  # three shown (each quotes its own value), then a count of the rest
    assert [d.address for d in size] == [
        "resources.web[0]",
        "resources.web[1]",
        "resources.web[2]",
        "resources.web",
    ]
    assert size[-1].message == "47 more instances with problems in this field"
    missing = [d for d in diagnostics if d.field == "size_gib"]
    assert len(missing) == 1
    assert missing[0].hint == "the same in 49 other instances"


GARBAGE = [
    "resources = 5\n",
    "resources = [1, 2]\n",
    "[resources.a]\ntype = []\n",
    "[resources.a]\ntype = { get_param = 'x' }\n",
    "[resources.a]\n",
    "[resources.a]\ntype = 'fake_thing'\ndepends_on = 'b'\n",
    "[resources.a]\ntype = 'fake_thing'\ndepends_on = [1, {}]\n",
    "[resources.a]\ntype = 'fake_thing'\ndepends_on = ['a[%index%]', 'x[y]']\n",
    "[resources.a]\ntype = 'fake_thing'\ncount = true\n",
    "[resources.a]\ntype = 'fake_thing'\ncount = { get_param = 5 }\n",
    "[resources.a]\ntype = 'fake_thing'\ncount = { get_resource = 'a' }\n",
    "[resources.a]\ntype = 'fake_thing'\ncount = { a = 1, b = 2 }\n",
    "[resources.a]\ntype = 'fake_thing'\ncount = 1979-05-27\n",
    "[resources.a]\ntype = 'fake_thing'\nsize = 1979-05-27T07:32:00Z\n",
    "[resources.a]\ntype = 'fake_thing'\nref = { get_param = [] }\n",
    "[resources.a]\ntype = 'fake_thing'\nref = { get_param = [1, 2] }\n",
    "[resources.a]\ntype = 'fake_thing'\nref = { get_resource = 5 }\n",
    "[resources.a]\ntype = 'fake_thing'\nref = { get_resource = 'a[x]' }\n",
    "[resources.a]\ntype = 'fake_thing'\nref = { get_resource = '' }\n",
    "[resources.a]\ntype = 'fake_thing'\nref = { get_attr = ['a'] }\n",
    "[resources.a]\ntype = 'fake_thing'\nref = { get_attr = [1, 2] }\n",
    "[resources.a]\ntype = 'fake_thing'\nref = { get_attr = { a = 1 } }\n",
    "[resources.a]\ntype = 'fake_thing'\nref = { str_replace = 5 }\n",
    "[resources.a]\ntype = 'fake_thing'\nref = { str_replace = { template = 5, params = {} } }\n",
    "[resources.a]\ntype = 'fake_thing'\nref = { str_replace = { template = 'x', params = 5 } }\n",
    "[resources.a]\ntype = 'fake_thing'\nref = { str_replace = { template = 'x', params = { a = [1] } } }\n",  # noqa: E501
    "[resources.a]\ntype = 'fake_thing'\nref = { list_join = 5 }\n",
    "[resources.a]\ntype = 'fake_thing'\nref = { list_join = [',', [{ a = 1 }]] }\n",
    "[resources.a]\ntype = 'fake_thing'\nref = { list_join = [','] }\n",
    "[resources.a]\ntype = 'fake_thing'\ntags = [[[[{ get_resource = 'zz' }]]]]\n",
    "[resources.a]\ntype = 'fake_thing'\ntags = { get_param = ['p', 'x', 3] }\n"
    "[parameters.p]\ntype = 'map'\ndefault = { x = [1] }\n",
    "[resources.a]\ntype = 'fake_thing'\nname = { get_attr = ['a', 'echo', 'x'] }\n"
    "[resources.b]\ntype = 'fake_thing'\nref = { get_attr = ['a', 'echo'] }\nsize = {}\n",
    "[resources.a]\ntype = 'fake_thing'\n[resources.a.tags]\nx = { y = { z = [] } }\n",
    "parameters = 'x'\n",
    "[parameters]\nx = 5\n",
    "[parameters.x]\ntype = 5\n",
    "[parameters.x]\ntype = 'list'\ndefault = 'a,b'\n",
    "[parameters.x]\ntype = 'number'\nconstraints = 'abc'\n",
    "[parameters.x]\ntype = 'number'\nconstraints = [5]\n",
    "[parameters.x]\ntype = 'number'\ndefault = 1\nconstraints = [{ range = { min = 'a' } }]\n",
    "[parameters.x]\ntype = 'string'\ndefault = 'a'\nconstraints = [{ length = { min = -1 } }]\n",
    "[parameters.x]\ntype = 'string'\ndefault = 'a'\nconstraints = [{ allowed_values = [] }]\n",
    "[parameters.x]\ntype = 'number'\nhidden = 'yes'\ndefault = 1\n",
    "[parameters.'bad name']\ntype = 'string'\ndefault = ''\n",
    "outputs = 5\n",
    "[outputs]\no = 'x'\n",
    "[outputs.o]\ndescription = 'no value'\n",
    "[outputs.o]\nvalue = { get_resource = 'nope' }\nsensitive = 'very'\n",
    "provider = 5\n",
    "[provider]\nfake = 5\n",
    "[provider.fake]\npath = { get_resource = 'a' }\n",
    "[provider.fake]\npath = { get_param = 'nope' }\n",
    "name = 5\ndescription = []\n",
    "name = ''\n",
    "[resources.'ünïcode']\ntype = 'fake_thing'\n",
    "[resources.a]\ntype = 'fake_thing'\ndepends_on = ['a%index%']\n",
]


@pytest.mark.parametrize("body", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_gives_user_error_never_an_exception(
    tmp_path: Path, registry: Registry, body: str
) -> None:
    text = body if body.startswith("version") else "version = 1\n" + body
    diagnostics = errors(tmp_path, registry, text)
    for d in diagnostics:
        assert d.message
        assert d.file == str(tmp_path / "stack.toml")
        assert "Traceback" not in d.message


@pytest.mark.parametrize(
    "text", ["", "\x00", "[[resources]]\n", "version = 1\n[resources]\n[[resources.a]]\n"]
)
def test_garbage_documents(tmp_path: Path, registry: Registry, text: str) -> None:
    errors(tmp_path, registry, text)


# ---------------------------------------------------------------------------------- good stacks


def test_count_expansion_with_index(tmp_path: Path, registry: Registry) -> None:
    stack = """
version = 1
[parameters.web_count]
type = "number"
default = 3

[resources.data]
type = "fake_disk"
count = { get_param = "web_count" }
size_gib = 1
source = "disk-%index%.img"

[resources.web]
type = "fake_thing"
count = { get_param = "web_count" }
name = "web-%index%"
ref = { get_resource = "data[%index%]" }
refs = [{ get_attr = ["data[%index%]", "id"] }]
tags = ["shared"]
"""
    config = load(tmp_path, registry, stack)
    assert list(config.resources) == [
        "data[0]",
        "data[1]",
        "data[2]",
        "web[0]",
        "web[1]",
        "web[2]",
    ]
    assert config.groups == {"data": ["data[0]", "data[1]", "data[2]"], "web": config.groups["web"]}
    web1 = config.resources["web[1]"]
    assert (web1.name, web1.index, web1.type, web1.provider) == ("web", 1, "fake_thing", "fake")
    assert web1.properties == {
        "name": "web-1",
        "ref": ex.GetResource("data", 1),
        "refs": [ex.GetAttr("data", 1, "id")],
        "tags": ["shared"],
    }
    assert web1.depends_on == ("data[1]",)
    assert config.resources["data[2]"].properties["source"] == "disk-2.img"
    # instances never share their top-level dict
    assert config.resources["web[0]"].properties is not web1.properties


def test_counted_without_index_in_values(tmp_path: Path, registry: Registry) -> None:
    stack = 'version = 1\n[resources.t]\ntype = "fake_thing"\ncount = 2\nsize = 4\n'
    config = load(tmp_path, registry, stack)
    t0, t1 = config.resources["t[0]"], config.resources["t[1]"]
    assert t0.properties == t1.properties == {"size": 4}
    assert t0.properties is not t1.properties


def test_count_zero_has_no_instances_but_is_still_checked(
    tmp_path: Path, registry: Registry
) -> None:
    stack = (
        'version = 1\n[resources.data]\ntype = "fake_disk"\ncount = 0\nsize_gib = 1\n'
        '[resources.web]\ntype = "fake_thing"\ncount = 0\n'
        'ref = { get_resource = "data[%index%]" }\n'
        '[resources.all]\ntype = "fake_thing"\nrefs = { get_resource = "web" }\n'
    )
    config = load(tmp_path, registry, stack)
    assert config.groups == {"data": [], "web": []}
    assert list(config.resources) == ["all"]
    assert config.resources["all"].depends_on == ()
    bad = stack.replace("size_gib = 1", "sise_gib = 1")
    assert_reported(errors(tmp_path, registry, bad), Expect("unknown field 'sise_gib'"))


def test_get_param_substitution(tmp_path: Path, registry: Registry) -> None:
    stack = """
version = 1
[parameters.size]
type = "number"
default = 4
[parameters.tags]
type = "list"
default = ["a", "b"]
[parameters.flavors]
type = "map"
default = { web = { name = "large" } }
[parameters.debug]
type = "boolean"
default = false

[resources.t]
type = "fake_thing"
size = { get_param = "size" }
tags = { get_param = "tags" }
flavor = { get_param = ["flavors", "web", "name"] }
fail = { get_param = "debug" }
refs = [{ get_param = ["tags", 1] }]
"""
    config = load(tmp_path, registry, stack)
    assert config.resources["t"].properties == {
        "size": 4,
        "tags": ["a", "b"],
        "flavor": "large",
        "fail": False,
        "refs": ["b"],
    }
    assert config.parameters == {
        "size": 4,
        "tags": ["a", "b"],
        "flavors": {"web": {"name": "large"}},
        "debug": False,
    }


def test_get_param_path_that_does_not_exist(tmp_path: Path, registry: Registry) -> None:
    stack = (
        'version = 1\n[parameters.m]\ntype = "map"\ndefault = { a = 1 }\n'
        '[resources.t]\ntype = "fake_thing"\nsize = { get_param = ["m", "b"] }\n'
    )
    assert_reported(
        errors(tmp_path, registry, stack),
        Expect("get_param: parameter 'm' has no key \"b\"", "resources.t", "size"),
    )


def test_parameter_precedence(tmp_path: Path, registry: Registry) -> None:
    stack = "version = 1\n" + "".join(
        f'[parameters.{n}]\ntype = "number"\ndefault = 0\n' for n in ("a", "b", "c", "d")
    )
    env1 = "[parameters]\nb = 1\nc = 1\nd = 1\n"
    env2 = "[parameters]\nc = 2\nd = 2\n"
    config = load(tmp_path, registry, stack, params=["d=3", "d=4"], env=[env1, env2])
    assert config.parameters == {"a": 0, "b": 1, "c": 2, "d": 4}


def test_later_good_value_replaces_a_bad_one(tmp_path: Path, registry: Registry) -> None:
    stack = 'version = 1\n[parameters.n]\ntype = "number"\n'
    env = '[parameters]\nn = "x"\n'
    diagnostics = errors(tmp_path, registry, stack, params=["n=2"], env=[env])
    assert [d.address for d in diagnostics] == ["parameters.n"]  # only the env file's mistake


@pytest.mark.parametrize(
    ("param_type", "text", "value"),
    [
        ("string", " x=y ", " x=y "),
        ("number", "3", 3),
        ("number", "-2.5", -2.5),
        ("number", "4.0", 4),
        ("number", "1e3", 1000),
        ("boolean", "Yes", True),
        ("boolean", "0", False),
        ("boolean", "false", False),
        ("list", "a, b ,c", ["a", "b", "c"]),
        ("list", "", []),
        ("list", '[1, "x"]', [1, "x"]),
        ("map", '{"a": {"b": 1}}', {"a": {"b": 1}}),
    ],
)
def test_convert_param(param_type: str, text: str, value: object) -> None:
    converted = convert_param(text, param_type)
    assert converted == value
    assert type(converted) is type(value)


@pytest.mark.parametrize(
    ("param_type", "text"),
    [
        ("number", "nan"),
        ("number", "inf"),
        ("number", ""),
        ("boolean", "y"),
        ("list", "[1"),
        ("map", "a=1"),
        ("map", "[]"),
    ],
)
def test_convert_param_rejects(param_type: str, text: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        convert_param(text, param_type)


def test_parse_param_assignment() -> None:
    assert parse_param_assignment("a=b=c") == ("a", "b=c")
    assert parse_param_assignment("a=") == ("a", "")
    for bad in ("a", "=b", ""):
        with pytest.raises(UserError):
            parse_param_assignment(bad)


def test_depends_on_edges(tmp_path: Path, registry: Registry) -> None:
    stack = """
version = 1
[resources.lan]
type = "fake_thing"
[resources.data]
type = "fake_disk"
count = 2
size_gib = 1
[resources.web]
type = "fake_thing"
count = 2
depends_on = ["lan", "data[%index%]"]
[resources.app]
type = "fake_thing"
depends_on = ["data[1]", "web"]
ref = { get_resource = "lan" }
"""
    config = load(tmp_path, registry, stack)
    assert config.resources["web[0]"].depends_on == ("data[0]", "lan")
    assert config.resources["web[1]"].depends_on == ("data[1]", "lan")
    assert config.resources["app"].depends_on == ("data[1]", "lan", "web[0]", "web[1]")
    assert config.resources["lan"].depends_on == ()


def test_whole_list_reference_to_counted_resource(tmp_path: Path, registry: Registry) -> None:
    stack = """
version = 1
[resources.data]
type = "fake_disk"
count = 3
size_gib = 1
[resources.t]
type = "fake_thing"
refs = { get_attr = ["data", "id"] }
[outputs.ids]
value = { get_resource = "data" }
"""
    config = load(tmp_path, registry, stack)
    t = config.resources["t"]
    assert t.properties["refs"] == ex.GetAttr("data", None, "id")
    assert t.depends_on == ("data[0]", "data[1]", "data[2]")
    assert config.outputs["ids"].value == ex.GetResource("data")


def test_str_replace_and_list_join_evaluated_when_known(tmp_path: Path, registry: Registry) -> None:
    stack = """
version = 1
[parameters.domain]
type = "string"
default = "lab.test"
[parameters.tags]
type = "list"
default = ["a", "b"]

[resources.lan]
type = "fake_thing"

[resources.web]
type = "fake_thing"
count = 2
name = { str_replace = { template = "web-$I.$D", params = { "$I" = "%index%", "$D" = { get_param = "domain" } } } }
flavor = { list_join = ["-", { get_param = "tags" }, ["c"], "%index%"] }
ref = { str_replace = { template = "id=$ID", params = { "$ID" = { get_resource = "lan" } } } }
tags = [{ list_join = [",", [{ get_attr = ["lan", "name"] }, { get_param = "domain" }]] }]
"""  # noqa: E501
    config = load(tmp_path, registry, stack)
    web1 = config.resources["web[1]"].properties
    assert web1["name"] == "web-1.lab.test"
    assert web1["flavor"] == "a-b-c-1"
    # still needs lan: kept as an expression with the known parts filled in
    assert web1["ref"] == ex.StrReplace("id=$ID", {"$ID": ex.GetResource("lan")})
    assert web1["tags"] == [ex.ListJoin(",", ([ex.GetAttr("lan", None, "name"), "lab.test"],))]
    assert config.resources["web[1]"].depends_on == ("lan",)


def test_inputs_validated_with_references_left_out(tmp_path: Path, registry: Registry) -> None:
    # size_gib is required: a reference stands for a value known after apply
    stack = (
        'version = 1\n[resources.t]\ntype = "fake_thing"\n'
        '[resources.d]\ntype = "fake_disk"\nsize_gib = { get_attr = ["t", "echo", "size"] }\n'
    )
    config = load(tmp_path, registry, stack)
    assert config.resources["d"].depends_on == ("t",)


def test_provider_settings_and_outputs(tmp_path: Path, registry: Registry) -> None:
    stack = """
version = 1
name = "lab"
description = "a lab"
[parameters.dir]
type = "string"
default = "/srv/fake"
[provider.fake]
path = { get_param = "dir" }
[resources.t]
type = "fake_thing"
[outputs.name]
value = { get_attr = ["t", "name"] }
description = "the thing's name"
sensitive = true
"""
    config = load(tmp_path, registry, stack)
    assert (config.name, config.description, config.file) == (
        "lab",
        "a lab",
        tmp_path / "stack.toml",
    )
    settings = config.provider_settings["fake"]
    assert type(settings).__name__ == "FakeSettings"
    assert settings.path == "/srv/fake"
    out = config.outputs["name"]
    assert (out.value, out.description, out.sensitive) == (
        ex.GetAttr("t", None, "name"),
        "the thing's name",
        True,
    )


def test_name_defaults_to_file_stem(tmp_path: Path, registry: Registry) -> None:
    config = load_stack(write(tmp_path, "version = 1\n", "web-lab.toml"), registry)
    assert config.name == "web-lab"
    assert config.resources == {}


def test_ten_thousand_instances(tmp_path: Path, registry: Registry) -> None:
    stack = (
        'version = 1\n[resources.base]\ntype = "fake_disk"\nsize_gib = 1\n'
        '[resources.web]\ntype = "fake_thing"\ncount = 10000\nname = "web-%index%"\n'
        'ref = { get_resource = "base" }\n'
    )
    config = load(tmp_path, registry, stack)
    assert len(config.resources) == 10001
    assert config.resources["web[9999]"].properties["name"] == "web-9999"
    assert config.resources["web[9999]"].depends_on == ("base",)


def test_long_hidden_value_not_leaked_by_truncation(tmp_path: Path, registry: Registry) -> None:
    secret = "k" * 70 + "-TAIL-OF-THE-KEY"
    stack = (
        f'version = 1\n[parameters.key]\ntype = "string"\nhidden = true\ndefault = "{secret}"\n'
        '[resources.t]\ntype = "fake_thing"\ntags = [{ get_param = "key" }, 1]\n'
        'size = { str_replace = { template = "$K", params = { "$K" = { get_param = "key" } } } }\n'
    )
    diagnostics = errors(tmp_path, registry, stack)
    text = "\n".join(str(d) for d in diagnostics)
    assert "kkkkkkkkkk" not in text
    assert_reported(diagnostics, Expect("found ****", "resources.t", "size"))


def test_provider_validator_bug_is_a_diagnostic(tmp_path: Path) -> None:
    from pydantic import field_validator

    from iacloud.provider import Provider, ResourceType
    from iacloud.schema import Inputs, prop

    class BuggyInputs(Inputs):
        name: str = prop("x")

        @field_validator("name")
        @classmethod
        def _boom(cls, value: str) -> str:
            raise TypeError("oops")

    class Buggy(ResourceType):
        type_name = "buggy"
        Inputs = BuggyInputs

    class BuggyProvider(Provider):
        name = "buggy"
        resource_types = (Buggy,)

    path = write(tmp_path, 'version = 1\n[resources.b]\ntype = "buggy"\nname = "y"\n')
    with pytest.raises(UserError) as info:
        load_stack(path, Registry([BuggyProvider]))
    assert_reported(
        info.value.diagnostics, Expect("cannot validate: TypeError: oops", "resources.b")
    )


def test_duplicate_key_in_env_file(tmp_path: Path, registry: Registry) -> None:
    stack = 'version = 1\n[parameters.n]\ntype = "number"\ndefault = 1\n'
    diagnostics = errors(tmp_path, registry, stack, env=["[parameters]\nn = 1\nn = 2\n"])
    assert_reported(diagnostics, Expect("duplicate key 'n' in [parameters] (line 3"))
