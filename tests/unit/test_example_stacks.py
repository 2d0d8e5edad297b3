"""The example stacks in stacks/ stay valid and plan what their comments promise.

Each is loaded the way `iacloud validate` loads it (engine.Workspace.load, with the real
libvirt and netlink schemas) and planned without refresh against an empty state: that path
reads no host, which the test makes sure of by making any libvirt connection fail."""

from __future__ import annotations

import re
from pathlib import Path

import libvirt
import pytest
from click.testing import CliRunner

from iacloud import engine
from iacloud.cli.main import cli
from iacloud.errors import UserError
from iacloud.plan import Action, Plan
from iacloud.planner import PlanOptions
from iacloud.render import plan_json, plan_text

ROOT = Path(__file__).resolve().parents[2]
STACKS = ROOT / "stacks"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleStackTestKeyOnly0123456789abcdefgh t@h"
CLOUD_IMAGE = "build/images/debian-12-cloud.qcow2"


@pytest.fixture(autouse=True)
def no_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IACLOUD_STATE", str(tmp_path / "state.db"))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("validating or planning an example stack opened libvirt")

    for name in ("open", "openReadOnly", "openAuth"):
        monkeypatch.setattr(libvirt, name, refuse)


def load(name: str, *params: str):
    return engine.Workspace(STACKS / name).load(list(params))


def plan(name: str, *params: str) -> Plan:
    ws = engine.Workspace(STACKS / name)
    the_plan, _ = engine.make_plan(ws, ws.load(list(params)), PlanOptions(refresh=False))
    return the_plan


def types(config) -> dict[str, str]:
    return {a: r.type for a, r in config.resources.items()}


def creates(the_plan: Plan) -> dict[str, dict]:
    assert all(c.action is Action.CREATE for c in the_plan.changes)
    return {c.address: c.after for c in the_plan.changes}


def check_rendering(the_plan: Plan) -> None:
    text = plan_text(the_plan)
    assert "__unknown__" not in text
    assert KEY not in text and KEY not in str(plan_json(the_plan))
    assert "(known after apply)" in text


def image_path(config) -> Path:
    (image,) = [r for r in config.resources.values() if r.type == "image"]
    return (config.directory / image.properties["source"]).resolve()


@pytest.mark.parametrize(
    "name", ["single-server.toml", "two-tier.toml", "cluster.toml", "demo.toml"]
)
def test_cli_validate_accepts_each_example(name: str):
    args = ["validate", str(STACKS / name)]
    if name != "demo.toml":
        args += ["-p", f"ssh_key={KEY}"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


@pytest.mark.parametrize("name", ["single-server.toml", "two-tier.toml", "cluster.toml"])
def test_examples_use_the_built_cloud_image_and_need_a_real_key(name: str):
    config = load(name, f"ssh_key={KEY}")
    assert image_path(config) == ROOT / CLOUD_IMAGE  # what `make cloud-image` writes
    assert KEY in config.hidden_values
    with pytest.raises(UserError, match="ssh_key"):
        load(name)  # no default: a stack never ships someone's key
    with pytest.raises(UserError, match="allowed_pattern"):
        load(name, "ssh_key=not a key")


def test_single_server():
    config = load("single-server.toml", f"ssh_key={KEY}")
    assert types(config) == {"debian": "image", "net": "network", "app": "server"}
    assert config.resources["app"].depends_on == ("debian", "net")
    after = creates(plan("single-server.toml", f"ssh_key={KEY}"))
    app = after["app"]
    assert app["hostname"] == "app1" and app["ssh_keys"] == [KEY]
    user_data = app["user_data"]
    assert user_data.startswith("#cloud-config\n")
    for part in ("hostname: app1", "write_files:", "runcmd:", "/usr/local/bin/hello"):
        assert part in user_data
    assert app["networks"] == [{"network": {"__unknown__": {"get_resource": "net"}}}]
    check_rendering(plan("single-server.toml", f"ssh_key={KEY}"))


def test_two_tier():
    config = load("two-tier.toml", f"ssh_key={KEY}", "web_count=3")
    expected = {
        "debian": "image",
        "front": "network",
        "back": "network",
        "router": "router",
        "web_sg": "security_group",
        "db_sg": "security_group",
        "db_port": "port",
        "db_data": "volume",
        "db": "server",
        **{f"web_port[{i}]": "port" for i in range(3)},
        **{f"web_data[{i}]": "volume" for i in range(3)},
        **{f"web[{i}]": "server" for i in range(3)},
    }
    assert types(config) == expected
    assert set(config.resources["web[2]"].depends_on) == {"debian", "web_port[2]", "web_data[2]"}
    assert set(config.resources["router"].depends_on) == {"front", "back"}
    assert set(config.resources["db_port"].depends_on) == {"back", "db_sg"}
    assert set(config.resources["db_sg"].depends_on) == {"web_sg"}
    the_plan = plan("two-tier.toml", f"ssh_key={KEY}", "web_count=3")
    after = creates(the_plan)
    assert after["db_port"]["ip"] == "198.18.41.10"
    assert [after[f"web_port[{i}]"]["ip"] for i in range(3)] == [
        "198.18.40.10",
        "198.18.40.11",
        "198.18.40.12",
    ]
    web2 = after["web[2]"]["user_data"]
    assert "<h1>web-2</h1>" in web2 and "DB_HOST=198.18.41.10" in web2 and "$" not in web2
    assert after["db"]["volumes"] == [{"__unknown__": {"get_resource": "db_data"}}]
    check_rendering(the_plan)


def test_two_tier_catches_a_db_address_off_its_network():
    with pytest.raises(UserError, match="outside network 'back'"):
        load("two-tier.toml", f"ssh_key={KEY}", "db_ip=198.18.40.5")


@pytest.mark.parametrize("count", [1, 3, 16])
def test_cluster_counts(count: int):
    config = load("cluster.toml", f"ssh_key={KEY}", f"node_count={count}")
    assert config.groups["node"] == [f"node[{i}]" for i in range(count)]
    assert config.groups["data"] == [f"data[{i}]" for i in range(count)]
    the_plan = plan("cluster.toml", f"ssh_key={KEY}", f"node_count={count}")
    after = creates(the_plan)
    assert len(after) == 2 + 2 * count
    last = after[f"node[{count - 1}]"]
    assert last["hostname"] == f"node-{count - 1}"
    assert re.search(rf"NODE_INDEX={count - 1}\n\s*NODE_COUNT={count}\n", last["user_data"])
    assert last["volumes"] == [{"__unknown__": {"get_resource": f"data[{count - 1}]"}}]
    check_rendering(the_plan)


def test_cluster_refuses_too_many_nodes():
    with pytest.raises(UserError, match="node_count"):
        load("cluster.toml", f"ssh_key={KEY}", "node_count=17")
