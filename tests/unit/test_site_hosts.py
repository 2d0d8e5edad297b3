"""Hosts in the site catalog: parsing, validation (nothing reaching a libvirt URI or an ssh
argument list can inject), capacity overrides and the state the scheduler is given."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iacloud.errors import UserError
from iacloud.hosts import host_states, in_parallel, ssh_checks, state_of
from iacloud.loading.site_file import read_site
from iacloud.provider import HostDown, HostReading, Provider
from iacloud.scheduler import Request, place_one
from iacloud.site_hosts import QUERY_PARAMS, CatalogHost, SshTarget, check_uri

LAB = "sshauth=privkey&keyfile=/var/lib/lab/id&known_hosts=/var/lib/lab/known_hosts"
GOOD = f"""version = 1
[hosts.h1]
uri = "qemu+libssh2://root@198.19.250.11/system?{LAB}"
ssh = {{ target = "h1", ssh_config = "/var/lib/lab/ssh_config" }}
labels = {{ zone = "a", aggregate = "ssd" }}
pool = "fast"
[hosts.h2]
uri = "qemu+ssh://root@h2.example.net/system"
ssh = "root@h2.example.net"
memory_mib = 8192
vcpus = 4
cpu_allocation_ratio = 2.0
reserved_host_memory_mib = 1024
"""


def _site(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def test_hosts_table_reads_every_field(tmp_path: Path) -> None:
    site = read_site(_site(tmp_path, GOOD))
    assert list(site.compute_hosts()) == ["h1", "h2"]
    h1, h2 = site.hosts["h1"], site.hosts["h2"]
    assert h1.labels == {"zone": "a", "aggregate": "ssd"} and h1.pool == "fast"
    assert h1.ssh == SshTarget(target="h1", ssh_config="/var/lib/lab/ssh_config")
    assert h2.ssh == SshTarget(target="root@h2.example.net")
    assert (h2.vcpus, h2.memory_mib, h2.disk_gib) == (4, 8192, None)
    assert h1.cpu_allocation_ratio == 4.0 and h1.reserved_host_memory_mib == 512  # Nova's


def test_without_hosts_table_the_one_host_is_local(tmp_path: Path) -> None:
    site = read_site(_site(tmp_path, "version = 1\n"))
    assert site.hosts == {}
    assert {n: h.uri for n, h in site.compute_hosts().items()} == {"local": "qemu:///system"}


BAD_HOSTS = [
    ('uri = "qemu+ssh://h/system?command=/bin/sh"', "'command' is not accepted", "uri"),
    ('uri = "qemu+ssh://h/system?netcat=nc"', "'netcat' is not accepted", "uri"),
    ('uri = "qemu+ssh://h/system?keyfile=id"', "keyfile='id' is not a valid", "uri"),
    ('uri = "qemu+ssh://h/system?keyfile=/a/../etc/shadow"', "not a valid", "uri"),
    ('uri = "qemu+ssh://h/system?keyfile=%2Fetc"', "plain key=value", "uri"),
    ('uri = "qemu+tls://h/system?no_verify=1"', "lab = true", "uri"),
    ('uri = "qemu+ssh://h;reboot/system"', "not a DNS name", "uri"),
    ('uri = "qemu+ssh://u:pw@h/system"', "plain login name", "uri"),
    ('uri = "qemu:///system?keyfile=/k"', "needs a remote scheme", "uri"),
    ('uri = "qemu://h1/system"', "names no host", "uri"),
    ('uri = "qemu+ssh://h/etc"', "/system", "uri"),
    ('uri = "qemu+ssh://h /system"', "printable ASCII", "uri"),
    ('uri = "xen+ssh://h/system"', "scheme 'xen+ssh'", "uri"),
    ('uri = "qemu:///system"\nssh = "-oProxyCommand=sh"', "is not [user@]host", "ssh"),
    ('uri = "qemu:///system"\nssh = "root@h;id"', "is not [user@]host", "ssh"),
    ('uri = "qemu:///system"\nssh = { target = "h", identity = "id_rsa" }', "absolute", "ssh"),
    ('uri = "qemu:///system"\nssh = { target = "h", shell = "x" }', "shell", "ssh"),
    ('uri = "qemu:///system"\nlabels = { Zone = "a" }', "label key 'Zone'", "labels"),
    ('uri = "qemu:///system"\nlabels = { zone = "a b" }', "label zone", "labels"),
    ('uri = "qemu:///system"\nvcpus = 0', "greater than or equal to 1", "vcpus"),
    ('uri = "qemu:///system"\ncpu_allocation_ratio = -1.0', "greater than 0", None),
    ('uri = "qemu:///system"\npool = "a/b"', "pattern", "pool"),
    ("vcpus = 2", "missing required field", "uri"),
]


@pytest.mark.parametrize("body,message,field", BAD_HOSTS)
def test_bad_host_names_file_host_and_field(
    tmp_path: Path, body: str, message: str, field: str | None
) -> None:
    path = _site(tmp_path, f"version = 1\n[hosts.h9]\n{body}\n")
    with pytest.raises(UserError) as exc:
        read_site(path)
    text = [str(d) for d in exc.value.diagnostics]
    hit = [t for t in text if message in t]
    assert hit, text
    assert str(path) in hit[0] and "hosts.h9" in hit[0]
    if field is not None:
        assert f"'{field}" in hit[0], hit[0]


def test_no_verify_is_accepted_on_a_lab_host() -> None:
    host = CatalogHost(lab=True, uri="qemu+tcp://198.19.250.11/system?no_verify=1")
    assert host.uri.endswith("no_verify=1")


# what a shell, ssh or libvirt's remote driver would treat specially
_DANGEROUS = set(" \t\n;|&$`'\"\\<>(){}*?!#~%,=")


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=60))
def test_an_accepted_ssh_target_cannot_inject(text: str) -> None:
    try:
        target = SshTarget(target=text)
    except ValueError:
        return
    assert not target.target.startswith("-")  # never read as an option
    assert not (_DANGEROUS & set(target.target))
    argv = target.argv("true")
    assert argv[argv.index("--") - 1] == text and shlex.split(shlex.join(argv)) == argv


_uri_parts = st.tuples(
    st.sampled_from(["qemu", "qemu+ssh", "qemu+libssh2", "qemu+tls", "qemu+tcp", "xen", "q+x"]),
    st.text(max_size=20),  # user@host:port, anything
    st.sampled_from(["/system", "/session", "/etc"]),
    st.lists(st.tuples(st.sampled_from([*QUERY_PARAMS, "command", "socket", "netcat"]),
                       st.text(max_size=20)), max_size=3),
)  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(_uri_parts, st.booleans())
def test_an_accepted_uri_cannot_inject(parts: tuple, lab: bool) -> None:
    scheme, netloc, path, query = parts
    uri = f"{scheme}://{netloc}{path}" + (
        "?" + "&".join(f"{k}={v}" for k, v in query) if query else ""
    )
    try:
        check_uri(uri, lab)
    except ValueError:
        return
    split = urlsplit(uri)
    assert split.scheme in ("qemu", "qemu+ssh", "qemu+libssh2", "qemu+tls", "qemu+tcp")
    assert not ({" ", ";", "|", "&", "`", "$", "'", '"', "\\", "\n"} & set(split.netloc))
    for key, value in (kv.split("=", 1) for kv in split.query.split("&") if kv):
        assert key in QUERY_PARAMS  # never command, socket or netcat: they run programs
        assert not (set(value) & set(" ;|&`$'\"\\\n%"))
    if "no_verify=1" in uri or "known_hosts_verify=ignore" in uri:
        assert lab


def _reading(vcpus: int = 8, mem: int = 16384, **kw: int) -> HostReading:
    base = dict(hostname="x", vcpus=vcpus, memory_mib=mem, disk_gib=100, used_vcpus=2,
                used_memory_mib=1024, used_disk_gib=10, domains=3, iacloud_domains=1)  # fmt: skip
    return HostReading(**{**base, **kw})


def test_catalog_capacity_overrides_the_hosts_own() -> None:
    entry = CatalogHost(uri="qemu:///system", memory_mib=4096, reserved_host_memory_mib=0,
                        labels={"zone": "b"})  # fmt: skip
    state = state_of("h2", entry, _reading())
    assert state.overridden == ("memory_mib",)
    assert (state.host.vcpus, state.host.memory_mib, state.host.disk_gib) == (8, 4096, 100)
    assert state.host.free_memory_mib == 4096 - 1024 and state.host.labels == {"zone": "b"}
    down = state_of("h3", entry, None, "connection refused (h3 port 22)")
    assert not down.up and down.host.down_reason.startswith("connection refused")
    req = Request("web[0]", vcpus=1, memory_mib=512)
    placed = place_one([down.host, state.host], req)
    assert placed.host == "h2" and "h3 excluded: down (connection refused" in placed.why


class _SlowProvider(Provider):
    """Hosts that answer after a delay given in their label, or not at all."""

    name = "slow"
    reads_hosts = True

    @classmethod
    def read_host(cls, host: CatalogHost, timeout: float) -> HostReading:
        if host.labels["delay"] == "refuse":
            raise HostDown("connection refused (test)")
        time.sleep(float(host.labels["delay"]))
        return _reading()


def test_hosts_are_read_in_parallel_and_a_hung_one_is_given_up(tmp_path: Path) -> None:
    hosts = "".join(
        f'[hosts.h{i}]\nuri = "qemu+ssh://h{i}/system"\nlabels = {{ delay = "{d}" }}\n'
        for i, d in enumerate(["0.5", "0.5", "0.5", "0.5", "refuse", "30"])
    )
    site = read_site(_site(tmp_path, f"version = 1\n{hosts}"))
    start = time.monotonic()
    states = host_states(site, _SlowProvider, read_timeout=1.5)
    took = time.monotonic() - start
    assert [s.name for s in states] == [f"h{i}" for i in range(6)]
    assert [s.up for s in states] == [True] * 4 + [False, False]
    assert states[4].host.down_reason == "connection refused (test)"
    assert states[5].host.down_reason.startswith("timeout")
    assert 1.4 < took < 2.5  # four 0.5 s hosts together, then the bound of the hung one


def test_in_parallel_keeps_the_order_of_the_jobs() -> None:
    jobs = {n: (lambda n=n: n * 2) for n in ("b", "a", "c")}
    assert in_parallel(jobs, 5, lambda n: "late") == {"b": "bb", "a": "aa", "c": "cc"}


def test_ssh_check_for_a_remote_host_without_target_says_how_to_add_one() -> None:
    (check,) = ssh_checks(CatalogHost(uri="qemu+ssh://h/system"))
    assert check.status == "warn" and 'ssh = "root@HOST"' in check.fix
    assert ssh_checks(CatalogHost(uri="qemu:///system")) == []


def test_doctor_reports_a_bad_catalog_as_a_finding(tmp_path: Path, monkeypatch) -> None:
    from iacloud import engine

    monkeypatch.setattr(engine, "run_checks", lambda registry: [])
    path = _site(tmp_path, 'version = 1\n[hosts.h1]\nuri = "qemu+ssh://h/system?command=x"\n')
    (check,) = engine.doctor(path)
    assert check.status == "fail" and check.name == "site catalog"
    assert "hosts.h1" in check.message and "'command' is not accepted" in check.message


def test_doctor_runs_each_catalog_hosts_checks_in_parallel(tmp_path: Path) -> None:
    from iacloud.hosts import host_doctor
    from iacloud.provider import Check

    class Checked(_SlowProvider):
        @classmethod
        def host_checks(cls, host: CatalogHost, timeout: float) -> list[Check]:
            time.sleep(float(host.labels["delay"]))
            return [Check("libvirtd", "ok", host.uri)]

    hosts = "".join(
        f'[hosts.h{i}]\nuri = "qemu:///system"\nlabels = {{ delay = "0.5" }}\n' for i in range(4)
    )
    site = read_site(_site(tmp_path, f"version = 1\n{hosts}"))
    start = time.monotonic()
    checks = host_doctor(site, Checked)
    assert time.monotonic() - start < 1.5
    assert [c.name for c in checks] == [f"host h{i}: libvirtd" for i in range(4)]
