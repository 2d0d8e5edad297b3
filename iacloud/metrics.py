"""Prometheus textfile metrics of a drift run, for node_exporter's textfile collector.

The file is written to a temporary name and renamed into place, so the collector never reads a
half-written file. Every series carries a `stack` label; a failed run still writes
`iacloud_drift_success 0` so an alert can tell "drift" from "the check itself broke".
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from iacloud.drift import DriftReport
from iacloud.errors import Diagnostic, UserError

_HELP = {
    "iacloud_drift_success": "1 if the drift run completed, 0 if it failed.",
    "iacloud_drift_drifted": "1 if unsuppressed drift was found.",
    "iacloud_drift_resources": "Resources recorded in state.",
    "iacloud_drift_modified_resources": "Resources with attributes changed outside iacloud.",
    "iacloud_drift_missing_resources": "Resources deleted outside iacloud.",
    "iacloud_drift_interrupted_resources": "Objects left by an interrupted create.",
    "iacloud_drift_orphaned_objects": "Objects tagged with the stack but not in state.",
    "iacloud_drift_unmanaged_objects": "Objects with no iacloud tag (only with --all).",
    "iacloud_drift_suppressed_findings": "Findings hidden by a suppression.",
    "iacloud_drift_expired_suppressions": "Suppressions past their expiry date.",
    "iacloud_drift_duration_seconds": "Duration of the drift run.",
    "iacloud_drift_last_run_timestamp_seconds": "Unix time of the drift run.",
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(stack: str, report: DriftReport | None, timestamp: float, duration: float) -> str:
    values: dict[str, float] = {
        "iacloud_drift_success": 0 if report is None else 1,
        "iacloud_drift_duration_seconds": round(duration, 3),
        "iacloud_drift_last_run_timestamp_seconds": round(timestamp, 3),
    }
    if report is not None:
        t = report.totals
        values |= {
            "iacloud_drift_drifted": int(report.drifted),
            "iacloud_drift_resources": t.resources,
            "iacloud_drift_modified_resources": t.modified,
            "iacloud_drift_missing_resources": t.missing,
            "iacloud_drift_interrupted_resources": t.interrupted,
            "iacloud_drift_orphaned_objects": t.orphaned,
            "iacloud_drift_suppressed_findings": t.suppressed,
            "iacloud_drift_expired_suppressions": len(report.expired_suppressions),
        }
        if t.unmanaged is not None:
            values["iacloud_drift_unmanaged_objects"] = t.unmanaged
    label = f'{{stack="{_escape(stack)}"}}'
    lines = []
    for name, help_text in _HELP.items():
        if name in values:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            lines.append(f"{name}{label} {_number(values[name])}")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def write(path: Path, text: str) -> None:
    """Replace `path` atomically (same directory, then rename)."""
    directory = path.parent if str(path.parent) else Path(".")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # the collector runs as another user
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise UserError(
            Diagnostic(f"cannot write the metrics file: {exc.strerror}", file=str(path))
        ) from None
