"""When a started server is ready: what the guest says on its console or through its agent.

Modes (`ready` per server, default from `[provider.libvirt] ready`):
- `cloud-init`: cloud-init has finished: its final console line ("Cloud-init v. X finished at
  ... Datasource ... Up N seconds") or `cloud-init status` run through the QEMU guest agent
  (guest-exec) saying done. Errors fail the create with cloud-init's own words: status
  error/degraded with its detail, "Failed to run module" lines before the final line, or a
  finish with DataSourceNone (the NoCloud seed was not found, so nothing was configured).
- `agent`: the QEMU guest agent answers.
- `console`: our test image's IACLOUD-READY line.
- `auto` (the default): the first of the above that applies; the agent alone counts only when
  the guest has no cloud-init (or the agent may not run commands), so a cloud image is never
  called ready before cloud-init has installed its keys and run its user-data.
- `none`: do not wait.

A timeout (or a guest that stopped) names what was awaited and shows the last console lines,
sanitized: escape sequences and control characters stripped, SSH host key blocks, key
material and fingerprints removed (the console log is for the user; the error may end up in
CI logs and events).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

ReadyMode = Literal["auto", "cloud-init", "agent", "console", "none"]
MODES: tuple[str, ...] = ("auto", "cloud-init", "agent", "console", "none")
READY_LINE = "IACLOUD-READY"

_AWAITED = {
    "auto": "cloud-init to finish (console or guest agent), the guest agent of an image "
    "without cloud-init, or an IACLOUD-READY console line",
    "cloud-init": "cloud-init to finish (its final console line or `cloud-init status` "
    "through the guest agent)",
    "agent": "the QEMU guest agent to answer",
    "console": "an IACLOUD-READY line on the serial console",
    "none": "nothing",
}

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), other two-byte escapes
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_KEY_BLOCK = re.compile(r"-----BEGIN SSH HOST KEY (?:FINGERPRINTS|KEYS)-----")
_KEY_BLOCK_END = re.compile(r"-----END SSH HOST KEY (?:FINGERPRINTS|KEYS)-----")
_SECRETISH = re.compile(
    r"(?:SHA256|MD5):[A-Za-z0-9+/=:]{16,}"  # fingerprints
    r"|(?:[0-9a-f]{2}:){15}[0-9a-f]{2}"  # hex fingerprints (ci-info key tables)
    r"|(?:ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-\S+|sk-\S+@openssh\.com)\s+AAAA"  # key material
    r"|BEGIN [A-Z ]*PRIVATE KEY"
)
_FINAL = re.compile(
    r"Cloud-init v\. (?P<version>\S+) finished at (?P<at>.*?)\. "
    r"Datasource (?P<datasource>\S+)(?P<rest>.*?)\.?\s+Up (?P<uptime>[\d.]+) seconds"
)
_ERROR_LINE = re.compile(
    r"Failed to run module \S+|Running module \S+ .* failed|\.py\[(?:ERROR|CRITICAL)\]"
)
_PREFIX = re.compile(r"^\[\s*[\d.]+\]\s*(?:cloud-init\[\d+\]:\s*)?")


def sanitize(text: str) -> list[str]:
    """Console text as printable lines: no escapes or control characters, no SSH host key
    blocks, no line carrying key material or a fingerprint."""
    text = _ANSI.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    out: list[str] = []
    in_block = False
    for raw in text.split("\n"):
        line = _CONTROL.sub("", raw).rstrip()
        if _KEY_BLOCK.search(line):
            in_block = True
            continue
        if in_block:
            if _KEY_BLOCK_END.search(line):
                in_block = False
            continue
        if _SECRETISH.search(line):
            continue
        out.append(line)
    return out


def last_lines(text: str, n: int = 8) -> list[str]:
    return [line for line in sanitize(text) if line.strip()][-n:]


@dataclass(frozen=True)
class Verdict:
    """ready, or failed with a reason; neither means keep waiting."""

    ready: bool = False
    failed: str | None = None
    how: str = ""  # what said so, for the progress message


WAITING = Verdict()


def cloud_init_final(lines: list[str]) -> re.Match[str] | None:
    for line in reversed(lines):
        if m := _FINAL.search(line):
            return m
    return None


def cloud_init_errors(lines: list[str]) -> list[str]:
    """cloud-init's own error lines of this boot, without timestamps, at most three."""
    found = []
    for line in lines:
        if _ERROR_LINE.search(line):
            found.append(_PREFIX.sub("", line).strip())
    return found[-3:]


def from_console(text: str, mode: str) -> Verdict:
    """What the console log of the current boot says."""
    lines = sanitize(text)
    if mode in ("auto", "console") and any(line.startswith(READY_LINE) for line in lines):
        return Verdict(ready=True, how="IACLOUD-READY line")
    if mode in ("auto", "cloud-init"):
        final = cloud_init_final(lines)
        if final is not None:
            if final["datasource"].startswith("DataSourceNone"):
                return Verdict(
                    failed="cloud-init found no NoCloud seed (it finished with DataSourceNone), "
                    "so the guest is not configured"
                )
            errors = cloud_init_errors(lines)
            if errors:
                return Verdict(failed="cloud-init reported errors: " + " | ".join(errors))
            return Verdict(
                ready=True,
                how=f"cloud-init {final['version']} finished (up {final['uptime']} s)",
            )
    return WAITING


@dataclass(frozen=True)
class CloudInitStatus:
    status: str  # done | running | error | degraded | disabled | not started | ...
    detail: str


def parse_status(text: str) -> CloudInitStatus | None:
    """The output of `cloud-init status --long` (22.x to 24.x layouts)."""
    status = None
    detail: list[str] = []
    errors: list[str] = []
    section = ""
    for raw in sanitize(text):
        line = raw.strip()
        key, sep, value = line.partition(":")
        if (
            sep
            and not raw.startswith((" ", "\t", "-"))
            and key
            in (
                "status",
                "detail",
                "errors",
                "recoverable_errors",
                "extended_status",
                "boot_status_code",
                "last_update",
                "time",
            )
        ):
            section = key
            value = value.strip()
            if key == "status":
                status = value
            elif key == "detail" and value:
                detail.append(value)
            elif key == "errors" and value and value != "[]":
                errors.append(value)
            continue
        if section == "detail" and line:
            detail.append(line)
        elif section == "errors" and line:
            errors.append(line.lstrip("- "))
    if status is None:
        return None
    return CloudInitStatus(status, "; ".join(errors or detail))


def from_status(st: CloudInitStatus) -> Verdict:
    if st.status == "done":
        return Verdict(ready=True, how="cloud-init status done (guest agent)")
    if st.status in ("error", "degraded", "degraded done", "degraded running"):
        if "running" in st.status:
            return WAITING
        return Verdict(failed=f"cloud-init status {st.status}: {st.detail or 'no detail given'}")
    if st.status == "disabled":
        return Verdict(ready=True, how="cloud-init disabled; guest agent answers")
    return WAITING


class Agent(Protocol):
    """The guest agent, as the wait needs it (see `guest_agent.Probe`)."""

    def poll(self, mode: str) -> Verdict: ...


def awaited(mode: str) -> str:
    return _AWAITED.get(mode, mode)


def wait(
    mode: str,
    timeout: float,
    console_text: Callable[[], str],
    alive: Callable[[], bool],
    agent: Agent | None,
    interval: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Verdict:
    """Poll the console (and the agent) until a verdict, the guest stops, or `timeout`.
    Returns a failed verdict with the reason in the two last cases too."""
    deadline = clock() + timeout
    while True:
        verdict = from_console(console_text(), mode)
        if verdict is WAITING and agent is not None and mode != "console":
            verdict = agent.poll(mode)
        if verdict is not WAITING:
            return verdict
        if not alive():
            return Verdict(failed=f"stopped while waiting for {awaited(mode)}")
        if clock() >= deadline:
            return Verdict(failed=f"was not ready in {timeout:g}s: waited for {awaited(mode)}")
        sleep(interval)
