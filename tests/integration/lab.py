"""The lab hosts of scripts/lab-hosts.sh as the tests reach them: their addresses, the script,
their libvirt URIs, their [hosts] tables for a site file, and commands on them over SSH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "lab-hosts.sh"
TINY = ROOT / "build" / "images" / "tiny.qcow2"
LAB_DIR = Path(os.environ.get("IACLOUD_LAB_DIR", "/var/lib/iacloud-lab"))
HOSTS = {"h1": "198.19.250.11", "h2": "198.19.250.12"}
NODE = "198.19.250.1"  # this machine on the underlay: the network node


def lab(*args: str) -> str:
    done = subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def uri(addr: str, keyfile: Path = LAB_DIR / "id_ed25519") -> str:
    return (f"qemu+libssh2://root@{addr}/system?sshauth=privkey&keyfile={keyfile}"
            f"&known_hosts={LAB_DIR / 'known_hosts'}")  # fmt: skip


def host_table(name: str, addr: str) -> str:
    return (f'[hosts.{name}]\nuri = "{uri(addr)}"\nlabels = {{ zone = "z{name[-1]}" }}\n'
            f'ssh = {{ target = "{name}", ssh_config = "{LAB_DIR}/ssh_config" }}\n')  # fmt: skip


def site_text() -> str:
    """A site file with every lab host in its [hosts]."""
    return "version = 1\n" + "".join(host_table(n, a) for n, a in HOSTS.items())


def workdir(factory: pytest.TempPathFactory, name: str, **stacks: str) -> Path:
    """The lab up, and a fresh directory `name*` with the lab's site.toml and each stack
    file (`NAME.toml` from NAME=text)."""
    lab("up", str(len(HOSTS)))
    path = factory.mktemp(name)
    (path / "site.toml").write_text(site_text())
    for stem, text in stacks.items():
        (path / f"{stem}.toml").write_text(text)
    return path


def run_stack(work: Path, stack: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`iacloud ARGS` on the stack file `work/stack` with the site file `work/site.toml`: the
    run commands (`plan`, `apply`, ...) take the stack as an argument, the read commands
    (`show`, `state show`) and `import` as --stack. A module's tests share one data dir (the
    records of its networks and volumes), not the per-test one the conftest gives."""
    env = {**os.environ, "IACLOUD_IMAGE_ROOTS": str(TINY.parent),
           "IACLOUD_DATA_DIR": str(work / "data")}  # fmt: skip
    path = str(work / stack)
    site = ["--site", str(work / "site.toml")]
    if args[0] in ("show", "state"):
        where = ["--stack", path]
    elif args[0] == "import":  # takes the stack as --stack, and finds objects on the hosts
        where = ["--stack", path, *site]
    else:
        where = [*site, path]
    return subprocess.run(
        [sys.executable, "-m", "iacloud.cli.main", *args, *where],
        capture_output=True, text=True, timeout=600, check=False, cwd=work, env=env,
    )  # fmt: skip


def on(host: str, *argv: str) -> str:
    """`argv` run on a lab host over SSH (ssh joins the words for the remote shell): stdout."""
    done = subprocess.run(
        ["ssh", "-F", str(LAB_DIR / "ssh_config"), host, "--", *argv],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return done.stdout


def links_of(host: str) -> list[str]:
    """The host's links whose names start with iac (the ones iacloud makes)."""
    return [line.split()[0].split("@")[0] for line in on(host, "ip", "-br", "link").splitlines()
            if line.startswith("iac")]  # fmt: skip


def fdb_peers(dump: str) -> set[str]:
    """The unicast VXLAN peers (all-zero entries) in `bridge fdb show` output."""
    return {
        line.split(" dst ")[1].split()[0]
        for line in dump.splitlines()
        if line.startswith("00:00:00:00:00:00") and " dst " in line
    }
