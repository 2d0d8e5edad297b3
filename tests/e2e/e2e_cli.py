"""What the end-to-end tests share: the installed `iacloud` command and the tiny image."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "build" / "images" / "tiny.qcow2"
# the Debian 12 cloud image (`make cloud-image`); IACLOUD_CLOUD_IMAGE names another copy
CLOUD = Path(os.environ.get("IACLOUD_CLOUD_IMAGE") or ROOT / "build/images/debian-12-cloud.qcow2")
IACLOUD = Path(sys.executable).parent / "iacloud"


def iacloud(*args: str, code: int = 0, timeout: float = 600) -> str:
    """Run the CLI as a user would; assert its exit code and that no traceback was shown."""
    proc = subprocess.run(
        [str(IACLOUD), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, out
    assert "Traceback" not in out
    return out
