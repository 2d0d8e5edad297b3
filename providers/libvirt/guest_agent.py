"""The QEMU guest agent of a server: is it there, what does the guest say about itself.

Every domain gets the agent's virtio-serial channel (`org.qemu.guest_agent.0`, see
`domain_xml`); an image with qemu-guest-agent opens it, and libvirt then shows the channel as
`state='connected'` in the live XML. Nothing here talks to a guest whose channel is not
connected, so an image without an agent costs no waiting. Calls are bounded by `TIMEOUT`
(a guest under emulation on a loaded host answers in well under a second; a hung one must
not hold up a refresh), and any libvirt error makes the agent a source that has nothing to say:
addresses then come from the DHCP lease, readiness from the console.

`cloud-init status` runs through guest-exec, started and polled without blocking (cloud-init's
Python takes seconds to start under emulation). libvirt marks a domain that received such
a command as tainted ("custom-ga-command") in its log; that is informational only.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import time
from typing import Any

import libvirt

from .readiness import WAITING, Verdict, from_status, parse_status

TIMEOUT = 5  # seconds, for one agent command
STATUS_EVERY = 10.0  # seconds between two `cloud-init status` runs while waiting
# exit 127: the shell found no cloud-init; anything else is cloud-init's own answer
_STATUS_SCRIPT = "command -v cloud-init >/dev/null 2>&1 || exit 127; exec cloud-init status --long"

try:  # part of libvirt-python; absent only in unusual builds
    import libvirt_qemu
except ImportError:  # pragma: no cover
    libvirt_qemu = None


def _command(dom: libvirt.virDomain, execute: str, **arguments: Any) -> Any:
    """One agent command's `return` value; None when the agent cannot answer."""
    if libvirt_qemu is None:
        return None
    cmd: dict[str, Any] = {"execute": execute}
    if arguments:
        cmd["arguments"] = arguments
    try:
        reply = libvirt_qemu.qemuAgentCommand(dom, json.dumps(cmd), TIMEOUT, 0)
        return json.loads(reply).get("return") if reply else None
    except (libvirt.libvirtError, ValueError, AttributeError):
        return None


def ping(dom: libvirt.virDomain) -> bool:
    return _command(dom, "guest-ping") is not None


def _set_timeout(dom: libvirt.virDomain) -> None:
    with contextlib.suppress(libvirt.libvirtError, AttributeError):
        dom.agentSetResponseTimeout(TIMEOUT, 0)


def addresses(dom: libvirt.virDomain) -> dict[str, list[str]] | None:
    """IPv4 addresses by MAC as the guest reports them (link-local left out); None when the
    agent did not answer."""
    _set_timeout(dom)
    try:
        ifaces = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0)
    except libvirt.libvirtError:
        return None
    out: dict[str, list[str]] = {}
    for info in (ifaces or {}).values():
        mac = str(info.get("hwaddr") or "").lower()
        if not mac:
            continue
        for addr in info.get("addrs") or ():
            if addr.get("type") != libvirt.VIR_IP_ADDR_TYPE_IPV4:
                continue
            try:
                ip = ipaddress.IPv4Address(addr.get("addr", ""))
            except ValueError:
                continue
            if not ip.is_link_local and not ip.is_loopback:
                out.setdefault(mac, []).append(str(ip))
    return out


def hostname(dom: libvirt.virDomain) -> str | None:
    _set_timeout(dom)
    try:
        name = dom.hostname(libvirt.VIR_DOMAIN_GET_HOSTNAME_AGENT)
    except (libvirt.libvirtError, AttributeError):
        return None
    return name or None


class Probe:
    """The agent side of a readiness wait (`readiness.wait` calls `poll` between console
    reads). Connected is read from the live XML by `connected()`, given by the caller."""

    def __init__(self, dom: libvirt.virDomain, connected: Any) -> None:
        self.dom = dom
        self.connected = connected  # () -> bool
        self.pid: int | None = None
        self.next_status = 0.0
        self.exec_unusable = False

    def poll(self, mode: str) -> Verdict:
        if mode not in ("auto", "agent", "cloud-init") or not self.connected():
            return WAITING
        if mode == "agent":
            return Verdict(ready=True, how="guest agent answers") if ping(self.dom) else WAITING
        if self.exec_unusable:
            if mode == "auto" and ping(self.dom):
                return Verdict(ready=True, how="guest agent answers (it may not run commands)")
            return WAITING
        if self.pid is None:
            if time.monotonic() < self.next_status:
                return WAITING
            started = _command(
                self.dom,
                "guest-exec",
                path="/bin/sh",
                arg=["-c", _STATUS_SCRIPT],
                **{"capture-output": True},
            )
            if not isinstance(started, dict) or "pid" not in started:
                # guest-exec refused (disabled, or no /bin/sh): the agent answers, no more
                self.exec_unusable = ping(self.dom)
                return self.poll(mode) if self.exec_unusable else WAITING
            self.pid = int(started["pid"])
            self.next_status = time.monotonic() + STATUS_EVERY
        result = _command(self.dom, "guest-exec-status", pid=self.pid)
        if not isinstance(result, dict):
            self.pid = None
            return WAITING
        if not result.get("exited"):
            return WAITING
        self.pid = None
        code = result.get("exitcode")
        out = _decode(result.get("out-data")) + _decode(result.get("err-data"))
        if code == 127:  # no cloud-init in this image
            if mode == "auto":
                return Verdict(ready=True, how="guest agent answers (no cloud-init in the image)")
            return Verdict(failed="the image has no cloud-init (ready = 'cloud-init')")
        status = parse_status(out)
        return from_status(status) if status is not None else WAITING


def _decode(data: Any) -> str:
    if not isinstance(data, str):
        return ""
    try:
        return base64.b64decode(data).decode(errors="replace")
    except ValueError:
        return ""
