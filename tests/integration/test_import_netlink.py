"""`iacloud import` of networks, ports and routers records what apply recorded (needs root).

Each test applies a small stack through the engine (real bridges, dnsmasq, namespaces and an
nftables table in the router's namespace, all on 198.18.0.0/15 and carrying no traffic), reads
one resource's recorded state, forgets it as `iacloud state rm` does, imports it by its id, and
compares: the same inputs and attributes, and an empty plan afterwards. The stack is destroyed
whatever happened, then anything of it still on the host is removed and reported.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute, netns

from iacloud import engine
from iacloud.planner import PlanOptions
from iacloud.providers.netlink import dnsmasq
from iacloud.providers.netlink.names import NetworkNames, parse_tag, router_namespace

pytestmark = [
    pytest.mark.netlink,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not shutil.which("dnsmasq"), reason="needs dnsmasq"),
    pytest.mark.skipif(not shutil.which("nft"), reason="needs nft"),
]

STACK = """
version = 1
name = "{name}"

[resources.lan]
type = "network"
cidr = "198.18.60.0/24"
dhcp_range = ["198.18.60.100", "198.18.60.150"]
dns = ["198.18.60.53"]
mtu = 1400

[resources.ext]
type = "network"
cidr = "198.19.60.0/24"
gateway = "198.19.60.254"
dhcp = false
external = true

[resources.p]
type = "port"
network = {{ get_resource = "lan" }}
ip = "198.18.60.5"

[resources.pinned]
type = "port"
network = {{ get_attr = ["lan", "id"] }}
ip = "198.18.60.6"
mac = "52:54:00:60:00:06"

[resources.r]
type = "router"
networks = [{{ get_resource = "lan" }}]
external = {{ network = {{ get_resource = "ext" }}, ip = "198.19.60.2" }}
"""


class Applied:
    """The applied stack, its workspace and config."""

    def __init__(self, tmp_path: Path) -> None:
        self.name = f"imp-{uuid.uuid4().hex[:6]}"
        self.path = tmp_path / "imp.toml"
        self.path.write_text(STACK.format(name=self.name))
        self.ws = engine.Workspace(self.path)
        self.config = self.ws.load()
        self.stack_id: str | None = None

    def apply(self) -> None:
        plan, _ = engine.make_plan(self.ws, self.config, PlanOptions())
        self.stack_id = plan.stack_id
        result = engine.apply(self.ws, plan)
        assert result.ok, result

    def plan_is_empty(self) -> bool:
        plan, _ = engine.make_plan(self.ws, self.config, PlanOptions())
        return not plan.has_changes

    def destroy(self) -> None:
        plan, _ = engine.destroy_plan(self.ws, self.name)
        engine.apply(self.ws, plan, command="destroy")

    def leftovers(self, remove: bool) -> list[str]:
        """Links tagged with the stack, its namespaces and dnsmasq processes; removed first
        when `remove` (a failed destroy must not leave them to the next test)."""
        if self.stack_id is None:
            return []
        found = []
        namespaces = set()
        with IPRoute() as ipr:
            for msg in ipr.get_links():
                owner = parse_tag(msg.get("IFLA_IFALIAS"))
                if owner and owner[0] == self.stack_id:
                    name = msg.get("IFLA_IFNAME")
                    found.append(f"link {name}")
                    if name.startswith("iacb"):
                        namespaces.add(NetworkNames(name).dhcp_namespace)
                    namespaces.add(router_namespace(*owner))
                    if remove:
                        with contextlib.suppress(Exception):
                            ipr.link("del", index=msg["index"])
        found += [f"namespace {ns}" for ns in sorted(namespaces & set(netns.listnetns()))]
        marker = str(engine.data_root() / "stacks" / self.stack_id)
        for entry in os.listdir("/proc"):
            argv = dnsmasq.cmdline(int(entry)) if entry.isdigit() else None
            if argv and os.path.basename(argv[0]) == "dnsmasq" and any(marker in a for a in argv):
                found.append(f"dnsmasq {entry}")
                if remove:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(entry), signal.SIGKILL)
        if remove:
            for ns in namespaces:
                with contextlib.suppress(Exception):
                    netns.remove(ns)
        return found


@pytest.fixture
def applied(tmp_path: Path) -> Iterator[Applied]:
    stack = Applied(tmp_path)
    try:
        stack.apply()
        yield stack
    finally:
        try:
            stack.destroy()
        finally:
            left = stack.leftovers(remove=True)
            stack.ws.close()
    assert left == [], "destroy left objects behind"


def reimport(stack: Applied, address: str) -> None:
    """Forget `address`, import it by its recorded id, and compare with what apply recorded."""
    backend = stack.ws.backend
    created = backend.snapshot(stack.name).resources[address]
    engine.state_surgery(stack.ws, stack.name, "state rm", {address: None})
    assert address not in backend.snapshot(stack.name).resources

    imported = engine.import_resource(stack.ws, stack.config, address, created.id or "")
    assert (imported.type, imported.id) == (created.type, created.id)
    assert imported.inputs == created.inputs
    assert imported.attributes == created.attributes
    recorded = backend.snapshot(stack.name).resources[address]
    assert (recorded.inputs, recorded.attributes) == (created.inputs, created.attributes)
    assert stack.plan_is_empty(), "the plan after import is not empty"


@pytest.mark.parametrize("address", ["lan", "ext"])
def test_import_network(applied: Applied, address: str) -> None:
    reimport(applied, address)


@pytest.mark.parametrize("address", ["p", "pinned"])
def test_import_port(applied: Applied, address: str) -> None:
    reimport(applied, address)


def test_import_router(applied: Applied) -> None:
    created = applied.ws.backend.snapshot(applied.name).resources["r"]
    assert created.inputs["external"] == {
        "network": applied.ws.backend.snapshot(applied.name).resources["ext"].id,
        "ip": "198.19.60.2",
        "snat": True,
    }
    reimport(applied, "r")
