"""The engine's public API: what a front end (the CLI today, an HTTP API next) calls.

Functions take plain values and a `Workspace`, return models, and raise `UserError` for bad
input; none knows of click, terminals or exit codes. A front end imports `iacloud.engine` and
the renderers (`iacloud.render`), never the loader, providers or state backends themselves.
"""

from __future__ import annotations

from pathlib import Path

from iacloud.doctor import run_checks
from iacloud.drift import DriftReport
from iacloud.engine.convert_ops import Conversion, convert
from iacloud.engine.plan_files import check_saved_plan, is_plan_file, load_plan, save_plan
from iacloud.engine.runs import (
    apply,
    check_disruption,
    dependency_dot,
    destroy_plan,
    destroy_settings,
    drift,
    evaluate_outputs,
    make_plan,
    record_state_updates,
    refresh,
    refresh_refs,
)
from iacloud.engine.site_ops import hosts_view, site_view
from iacloud.engine.state_ops import (
    StateCopy,
    StateView,
    copy_state,
    events,
    import_resource,
    resource_view,
    stack_output,
    stack_outputs,
    state_mv,
    state_rm,
    state_surgery,
    state_view,
    unlock,
    versions,
)
from iacloud.engine.workspace import Workspace, prepare_state, stack_name
from iacloud.errors import IacloudError, UserError
from iacloud.executor import ApplyResult, Reporter, Step, StepOutcome
from iacloud.hosts import compute_provider, host_doctor
from iacloud.interrupts import Interrupts
from iacloud.loading.site_file import load_site
from iacloud.paths import data_root
from iacloud.plan import Action, Plan
from iacloud.planner import PlanOptions
from iacloud.provider import Check, Registry
from iacloud.schema import Disruption
from iacloud.state import LockHeld, StateError
from iacloud.suppressions import load as load_suppressions

__all__ = [
    "Action",
    "ApplyResult",
    "Check",
    "Conversion",
    "Disruption",
    "DriftReport",
    "IacloudError",
    "Interrupts",
    "LockHeld",
    "Plan",
    "PlanOptions",
    "Reporter",
    "StateCopy",
    "StateError",
    "StateView",
    "Step",
    "StepOutcome",
    "UserError",
    "Workspace",
    "apply",
    "check_disruption",
    "check_saved_plan",
    "convert",
    "copy_state",
    "data_root",
    "dependency_dot",
    "destroy_plan",
    "destroy_settings",
    "doctor",
    "drift",
    "evaluate_outputs",
    "events",
    "hosts_view",
    "import_resource",
    "is_plan_file",
    "load_plan",
    "load_suppressions",
    "make_plan",
    "prepare_state",
    "record_state_updates",
    "refresh",
    "refresh_refs",
    "resource_view",
    "save_plan",
    "site_view",
    "stack_name",
    "stack_output",
    "stack_outputs",
    "state_mv",
    "state_rm",
    "state_surgery",
    "state_view",
    "unlock",
    "versions",
]


def doctor(site_file: Path | None = None) -> list[Check]:
    """The host checks of every installed provider (libvirtd, pool, dnsmasq, nftables, ...),
    then each host of the site catalog's [hosts] table (libvirtd through its URI, the
    virtualization, the pool, SSH and the network tools on it)."""
    registry = Registry.discover()
    checks = run_checks(registry)
    try:
        site = load_site(site_file)
    except UserError as exc:  # a bad catalog is a finding; the other checks still run
        detail = "; ".join(str(d) for d in exc.diagnostics) if exc.diagnostics else str(exc)
        return [*checks, Check("site catalog", "fail", detail, "fix the site file")]
    if site is not None and site.hosts:
        checks += host_doctor(site, compute_provider(registry))
    return checks
