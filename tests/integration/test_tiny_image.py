"""The tiny test image boots under QEMU emulation and honours a NoCloud seed.

Builds (or reuses) build/images/tiny.qcow2 with scripts/build-image.sh, boots it with
qemu-system-x86_64 directly (no libvirt), with a seed ISO made here with pycdlib, and checks
the ready line and the user-data script's output on the serial console.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "build" / "images" / "tiny.qcow2"
QEMU = shutil.which("qemu-system-x86_64")
BOOT_TIMEOUT = 90  # seconds to the ready line; about 3 s here under TCG

READY_RE = re.compile(r"^IACLOUD-READY hostname=(\S*) addresses=(\S*) macs=(\S*)\s*$", re.MULTILINE)

pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 not installed")


@pytest.fixture(scope="module")
def image() -> Path:
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-image.sh"), str(IMAGE)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"build-image.sh failed:\n{proc.stdout}\n{proc.stderr}"
    assert IMAGE.is_file()
    return IMAGE


def make_seed(path: Path, meta_data: str, user_data: str, network_config: str = "") -> None:
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    files = {"meta-data": meta_data, "user-data": user_data, "network-config": network_config}
    for name, text in files.items():
        data = text.encode()
        short = name.replace("-", "").upper()[:8]
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            f"/{short}.;1",
            rr_name=name,
            joliet_path=f"/{name}",
        )
    iso.write(str(path))
    iso.close()


def boot(image: Path, seed: Path, log: Path, *, net: bool) -> tuple[subprocess.Popen, float]:
    args = [
        QEMU,
        "-machine",
        "q35,accel=tcg",
        "-m",
        "256",
        "-nodefaults",
        "-no-reboot",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{log}",
        # snapshot=on: the cached image is never written to
        "-drive",
        f"file={image},format=qcow2,if=virtio,snapshot=on",
        # the seed as the libvirt provider attaches it: a read-only virtio disk
        "-drive",
        f"file={seed},format=raw,if=virtio,readonly=on",
    ]
    if net:
        # QEMU's user-mode network (slirp): its built-in DHCP server, nothing leaves the host
        args += ["-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0"]
    started = time.monotonic()
    with open(log.with_suffix(".stderr"), "wb") as err:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    return proc, started


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def wait_ready(proc: subprocess.Popen, log: Path, started: float) -> tuple[re.Match, str, float]:
    deadline = started + BOOT_TIMEOUT
    text = ""
    while time.monotonic() < deadline:
        text = log.read_bytes().decode(errors="replace").replace("\r", "") if log.exists() else ""
        m = READY_RE.search(text)
        if m:
            return m, text, time.monotonic() - started
        if proc.poll() is not None:
            err = log.with_suffix(".stderr").read_text(errors="replace")
            pytest.fail(f"qemu exited with {proc.returncode}: {err}\nconsole:\n{text}")
        time.sleep(0.1)
    pytest.fail(f"no ready line within {BOOT_TIMEOUT} s; console:\n{text}")


def test_boots_with_seed_hostname_and_user_data(image: Path, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:10]
    hostname = f"tiny-{tag}"
    marker = f"USERDATA-MARKER-{tag}"
    seed = tmp_path / "seed.iso"
    make_seed(
        seed,
        meta_data=f"instance-id: i-{tag}\nlocal-hostname: {hostname}\n",
        user_data=f'#!/bin/sh\necho "{marker} on $(hostname)"\n',
    )
    log = tmp_path / "console.log"
    proc, started = boot(image, seed, log, net=True)
    try:
        m, text, elapsed = wait_ready(proc, log, started)
    finally:
        stop(proc)
    print(f"ready line after {elapsed:.1f} s: {m.group(0)}")

    assert m.group(1) == hostname
    assert f"{marker} on {hostname}" in text
    # the user-data script runs before the ready line
    assert text.index(marker) < m.start()
    assert len(READY_RE.findall(text)) == 1
    # slirp's DHCP hands out 10.0.2.15/24 to the first guest NIC
    assert m.group(2) == "eth0=10.0.2.15/24", text


def test_static_address_from_network_config(image: Path, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:10]
    seed = tmp_path / "seed.iso"
    make_seed(
        seed,
        meta_data=f'{{"instance-id": "i-{tag}", "local-hostname": "static-{tag}"}}\n',
        user_data="#cloud-config\n",
        network_config=(
            "version: 2\n"
            "ethernets:\n"
            "  eth0:\n"
            "    dhcp4: false\n"
            "    addresses: [198.18.7.20/24]\n"
            "    gateway4: 198.18.7.1\n"
        ),
    )
    log = tmp_path / "console.log"
    proc, started = boot(image, seed, log, net=True)
    try:
        m, _text, _elapsed = wait_ready(proc, log, started)
    finally:
        stop(proc)
    assert m.group(1) == f"static-{tag}"
    assert m.group(2) == "eth0=198.18.7.20/24"
