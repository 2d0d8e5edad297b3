"""`iacloud doctor`: host checks gathered from every installed provider, plus the engine's own."""

from __future__ import annotations

import os
import shutil

from iacloud.paths import data_root
from iacloud.provider import Check, Registry


def engine_checks() -> list[Check]:
    checks = []
    root = data_root()
    probe = root if root.exists() else root.parent
    if os.access(probe, os.W_OK):
        checks.append(Check("data directory", "ok", f"{root} is writable"))
    else:
        checks.append(
            Check(
                "data directory",
                "fail",
                f"{root} is not writable",
                "run as root, or set IACLOUD_DATA_DIR to a writable directory",
            )
        )
    if shutil.which("dot"):
        checks.append(Check("graphviz", "ok", "'dot' found (graph --format svg)"))
    else:
        checks.append(
            Check(
                "graphviz",
                "warn",
                "'dot' not found: graph --format svg fails",
                "apt-get install graphviz",
            )
        )
    return checks


def run_checks(registry: Registry) -> list[Check]:
    checks = engine_checks()
    checks += [
        Check("providers", "fail", d.message, "reinstall iacloud") for d in registry.load_errors
    ]
    for name, cls in sorted(registry.providers.items()):
        try:
            checks.extend(cls.doctor(cls.Settings()))
        except Exception as exc:  # a check that crashes is itself a finding
            checks.append(Check(f"{name} provider", "fail", f"the check itself failed: {exc}"))
    return checks
