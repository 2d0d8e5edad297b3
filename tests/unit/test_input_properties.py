"""Property tests (Hypothesis) of the readers of user input: stack files (with environment
files and -p values), saved plan files and state files. Generated documents and mutations of
them must give a result or a clean iacloud error - never another exception - within the time
bound of 2 s (Hypothesis' deadline). Example counts are kept small for CI on 2 cores."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from toml_text import toml_string, toml_value

from iacloud import engine
from iacloud.errors import IacloudError, UserError
from iacloud.loading import load_stack
from iacloud.planner import PlanOptions
from iacloud.provider import Registry
from iacloud.state.sqlite import SQLiteBackend

BOUND = settings(
    max_examples=60,
    deadline=2000,  # ms: the time bound of every input
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,  # the same examples in every CI run: a failure is reproducible
)

TYPES = ["volume", "image", "network", "port", "server", "router", "fake_thing", "bogus"]
FIELDS = ["size_gib", "image", "format", "pool", "source", "sha256", "cidr", "gateway", "dhcp",
          "dhcp_range", "dns", "mtu", "segment", "network", "ip", "mac", "vcpus", "memory_mib",
          "networks", "volumes", "user_data", "ssh_keys", "power_state", "hostname", "external",
          "name", "size", "flavor", "ref"]  # fmt: skip


def text(max_size: int) -> st.SearchStrategy[str]:
    """Any text TOML can hold (a lone surrogate cannot be written, so none)."""
    return st.text(st.characters(exclude_categories=("Cs",)), max_size=max_size)


NAMES = st.sampled_from(["r0", "r1", "r2", "p0", "p1", "web", "lan"]) | text(max_size=6)

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    text(max_size=12),
    st.sampled_from(["198.18.0.0/24", "198.18.0.5", "qcow2", "raw", "%index%", "web-%index%",
                     "52:54:00:00:00:01", "../x.qcow2", "/etc/shadow", "(a+)+$", "\n\x1b[2J"]),
)  # fmt: skip


def _functions(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    address = NAMES | st.sampled_from(["r0[0]", "r1[%index%]", "r0[99]"])
    return st.one_of(
        st.builds(lambda n: {"get_param": n}, NAMES),
        st.builds(lambda n, p: {"get_param": [n, p]}, NAMES, children),
        st.builds(lambda a: {"get_resource": a}, address),
        st.builds(
            lambda a, at: {"get_attr": [a, at]},
            address,
            st.sampled_from(["id", "name", "addresses", "bogus"]),
        ),
        st.builds(lambda t, p: {"str_replace": {"template": t, "params": p}}, children, children),
        st.builds(lambda d, items: {"list_join": [d, items]}, children, children),
        st.builds(
            lambda k, v: {k: v},
            st.sampled_from(["get_parm", "Get_Resource", "list-join"]),
            children,
        ),
    )


values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(NAMES, children, max_size=3)
        | _functions(children)
    ),
    max_leaves=12,
)
constraint = st.one_of(
    st.builds(lambda v: {"allowed_values": v}, st.lists(scalars, max_size=3)),
    st.builds(lambda lo, hi: {"range": {"min": lo, "max": hi}}, scalars, scalars),
    st.builds(lambda lo, hi: {"length": {"min": lo, "max": hi}}, scalars, scalars),
    st.builds(lambda p: {"allowed_pattern": p},
              text(max_size=8) | st.sampled_from(["(a+)+$", "[a-z]+", r"(a)\1", "(?=a)"])),
    st.dictionaries(st.sampled_from(["range", "length", "description"]), values, max_size=2),
)  # fmt: skip
parameter = st.fixed_dictionaries(
    {"type": st.sampled_from(["string", "number", "boolean", "list", "map", "bogus"])},
    optional={"default": values, "hidden": st.booleans() | scalars,
              "constraints": st.lists(constraint, max_size=2) | scalars},
)  # fmt: skip
resource = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | scalars},
    optional={
        "count": st.integers(min_value=-2, max_value=12) | values,
        "depends_on": st.lists(NAMES | st.sampled_from(["r0[%index%]", "r1[0]"]), max_size=3),
        **{f: values for f in FIELDS},
    },
)
provider = st.dictionaries(
    st.sampled_from(["libvirt", "netlink", "fake", "bogus"]),
    st.dictionaries(st.sampled_from(["uri", "pool", "pool_path", "virt_type_cache", "state_dir",
                                     "image_roots", "dhcp_user", "path", "bogus"]), values,
                    max_size=3),
    max_size=2,
)  # fmt: skip
stacks = st.fixed_dictionaries(
    {"version": st.sampled_from([1, 1, 1, 1, 1, 1, 2, "1", 1.0]) | scalars},
    optional={
        "name": st.sampled_from(["lab", "web"]) | scalars,
        "parameters": st.dictionaries(NAMES, parameter, max_size=3),
        "resources": st.dictionaries(NAMES, resource, max_size=4),
        "outputs": st.dictionaries(NAMES, st.fixed_dictionaries({"value": values}), max_size=2),
        "provider": provider,
    },
)


def toml_document(doc: dict[str, Any]) -> str:
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in doc.items())


def mutate(data: bytes, draw: Callable[[st.SearchStrategy[Any]], Any]) -> bytes:
    """A few byte-level edits: cut, repeat, insert (including non-UTF-8 and brackets)."""
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        i = draw(st.integers(min_value=0, max_value=len(data)))
        j = draw(st.integers(min_value=i, max_value=min(len(data), i + 40)))
        edit = draw(st.sampled_from(["cut", "repeat", "insert"]))
        if edit == "cut":
            data = data[:i] + data[j:]
        elif edit == "repeat":
            data = data[:j] + data[i:j] * draw(st.integers(1, 50)) + data[j:]
        else:
            piece = draw(
                st.binary(max_size=6)
                | st.sampled_from(
                    [b"[" * 80, b"{a=" * 80, b"9" * 5000, b"\xff\xfe", b'"', b"\n[resources.x]\n"]
                )
            )
            data = data[:i] + piece + data[i:]
    return data


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.discover()


def loads_cleanly(path: Path, registry: Registry, params: list[str] = (), envs=()) -> None:
    try:
        load_stack(path, registry, list(params), list(envs))
    except UserError as exc:
        assert exc.diagnostics
        for d in exc.diagnostics:  # printed errors are one line each
            assert "\n" not in str(d) and "\x1b" not in str(d)


@BOUND
@given(doc=stacks)
def test_generated_stacks_load_or_fail_cleanly(tmp_path: Path, registry: Registry, doc) -> None:
    path = tmp_path / "s.toml"
    path.write_text(toml_document(doc))
    loads_cleanly(path, registry)


@BOUND
@given(doc=stacks, data=st.data())
def test_mutated_stacks_load_or_fail_cleanly(tmp_path: Path, registry: Registry, doc, data) -> None:
    path = tmp_path / "s.toml"
    path.write_bytes(mutate(toml_document(doc).encode(), data.draw))
    loads_cleanly(path, registry)


@BOUND
@given(
    doc=stacks,
    params=st.lists(
        st.builds(lambda n, v: f"{n}={v}", NAMES, text(max_size=20)
                  | st.sampled_from(["9" * 5000, "[" * 5000, '{"a": ' * 100, "1e999", "nan"])),
        max_size=3,
    ),
    env=st.dictionaries(st.sampled_from(["parameters", "other"]),
                        st.dictionaries(NAMES, values, max_size=3), max_size=2),
)  # fmt: skip
def test_parameters_and_env_files_load_or_fail_cleanly(
    tmp_path: Path, registry: Registry, doc, params, env
) -> None:
    path = tmp_path / "s.toml"
    path.write_text(toml_document(doc))
    env_file = tmp_path / "env.toml"
    env_file.write_text(toml_document(env))
    loads_cleanly(path, registry, params, [env_file])


# -- plan files -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plan_data(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("plan")
    stack = d / "s.toml"
    stack.write_text(
        'version = 1\nname = "pp"\n[resources.a]\ntype = "fake_thing"\n'
        '[resources.b]\ntype = "fake_thing"\ncount = 2\nref = { get_attr = ["a", "id"] }\n'
        '[outputs.o]\nvalue = { get_attr = ["b", "name"] }\n'
    )
    ws = engine.Workspace(stack, str(d / "state.db"), registry=registry)
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions(refresh=False))
    return json.loads(plan.model_dump_json())


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def reads_plan_cleanly(path: Path, registry: Registry) -> None:
    try:
        plan = engine.load_plan(path)
    except UserError as exc:
        assert exc.diagnostics
        return
    ws = engine.Workspace(path, registry=registry)
    with contextlib.suppress(UserError):
        ws.settings_from_plan(plan)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False) | text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text(max_size=5),
                                                                       children, max_size=3),
    max_leaves=10,
)  # fmt: skip


@BOUND
@given(data=st.data())
def test_mutated_plan_files_read_or_fail_cleanly(
    tmp_path: Path, registry: Registry, plan_data: dict[str, Any], data
) -> None:
    doc = json.loads(json.dumps(plan_data))
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(_paths(doc)[1:]))
        parent = doc
        for key in where[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[where[-1]]
        else:
            parent[where[-1]] = data.draw(json_values)
        if not isinstance(doc, dict):
            break
    text = json.dumps(doc).encode()
    if data.draw(st.booleans()):
        text = mutate(text, data.draw)
    path = tmp_path / "plan.json"
    path.write_bytes(text)
    reads_plan_cleanly(path, registry)


# -- state files ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def state_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from iacloud.state.model import Event, PendingOperation, ResourceState

    path = tmp_path_factory.mktemp("state") / "state.db"
    b = SQLiteBackend(path)
    for serial_no in range(2):
        snap = b.snapshot("st")
        serial = b.begin_version("st", "apply", snap.stack_id, snap.lineage)
        for i in range(3):
            address = f"r[{i}]"
            rs = ResourceState(
                address=address, type="fake_thing", provider="fake", id=f"id{i}{serial_no}",
                inputs={"n": i}, attributes={"a": [i]},
            )  # fmt: skip
            b.record_result("st", serial, address, rs,
                            Event(serial=serial, address=address, type="fake_thing",
                                  action="CREATE", status="COMPLETE"))  # fmt: skip
        b.record_pending("st", PendingOperation(address="p", type="fake_thing", provider="fake",
                                                action="create", serial=serial),
                         Event(serial=serial, address="p", type="fake_thing", action="CREATE",
                               status="IN_PROGRESS"))  # fmt: skip
        b.finish_version("st", serial, "complete", {"o": {"value": 1, "sensitive": False}})
    b.close()
    return path


COLUMNS = {
    "stacks": ["name", "stack_id", "lineage"],
    "versions": ["serial", "lineage", "status", "created_at", "finished_at", "outputs"],
    "resources": ["address", "serial_from", "serial_to", "data"],
    "pending": ["serial", "data"],
    "events": ["serial", "time", "status", "action"],
    "meta": ["value"],
}
cell = st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | text(max_size=20) \
    | json_values.map(json.dumps) | st.binary(max_size=8)  # fmt: skip


def reads_state_cleanly(path: Path) -> None:
    try:
        b = SQLiteBackend(path, read_only=True)
        for serial in (None, 1):
            b.snapshot("st", serial)
        b.versions("st")
        b.events("st", 50)
        b.stacks()
        b.close()
    except IacloudError:
        pass


@BOUND
@given(edits=st.lists(
    st.tuples(st.sampled_from(sorted(COLUMNS)), st.data()), min_size=1, max_size=3))  # fmt: skip
def test_damaged_state_rows_read_or_fail_cleanly(tmp_path: Path, state_file: Path, edits) -> None:
    path = tmp_path / "state.db"
    shutil.copy(state_file, path)
    with sqlite3.connect(path) as raw:
        for table, data in edits:
            column = data.draw(st.sampled_from(COLUMNS[table]))
            with contextlib.suppress(sqlite3.IntegrityError):  # NOT NULL, CHECK: not storable
                raw.execute(
                    f"UPDATE {table} SET {column} = ? WHERE rowid = "
                    f"(SELECT rowid FROM {table} LIMIT 1 OFFSET ?)",
                    (data.draw(cell), data.draw(st.integers(0, 3))),
                )
    raw.close()
    reads_state_cleanly(path)


@BOUND
@given(data=st.data())
def test_damaged_state_bytes_read_or_fail_cleanly(tmp_path: Path, state_file: Path, data) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(mutate(state_file.read_bytes(), data.draw))
    reads_state_cleanly(path)
