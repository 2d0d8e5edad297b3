"""`iacloud doctor` on this host, and its reading of how libvirtd sees /dev/kvm."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from iacloud.cli.main import cli

pytestmark = pytest.mark.libvirt


def test_doctor_reports_libvirtd_and_emulation_here():
    result = CliRunner().invoke(cli, ["doctor", "--json"])
    checks = {c["name"]: c for c in json.loads(result.output)}
    assert checks["libvirtd"]["status"] == "ok"
    # this host's KVM cannot run guests: doctor must say emulation, and that defines are fast
    assert "QEMU emulation" in checks["virtualization"]["message"]
    assert checks["slow defines"]["status"] == "ok"
    assert result.exit_code == 0


def test_mask_classification(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from iacloud.providers.libvirt import doctor

    real = os.stat

    def fake_stat(path, *a, **kw):
        if str(path).endswith("/dev/kvm"):
            return real(str(tmp_path / "kvm"))
        return real(path, *a, **kw)

    monkeypatch.setattr(doctor.os, "stat", fake_stat)
    (tmp_path / "kvm").write_text("")
    assert doctor.kvm_as_libvirtd_sees_it(1) == "file"
    (tmp_path / "kvm").unlink()
    os.mknod(tmp_path / "kvm", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    assert doctor.kvm_as_libvirtd_sees_it(1) == "open-mask"
    os.chmod(tmp_path / "kvm", 0)
    assert doctor.kvm_as_libvirtd_sees_it(1) == "masked"
    (tmp_path / "kvm").unlink()
    os.mknod(tmp_path / "kvm", 0o660 | stat.S_IFCHR, os.makedev(10, 232))
    assert doctor.kvm_as_libvirtd_sees_it(1) == "device"
