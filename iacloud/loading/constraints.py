"""Heat's parameter constraints (allowed_values, range, length, allowed_pattern,
custom_constraint): which types each applies to, whether a value satisfies one, and Heat's
wording when it does not. The catalog's custom constraints (nova.flavor, glance.image,
nova.keypair, neutron.network) are checked against the site catalog (`iacloud.site`), with
"did you mean" suggestions; ip_addr, net_cidr and mac_addr check syntax."""

from __future__ import annotations

import ipaddress
from typing import Any

from iacloud import patterns
from iacloud.errors import did_you_mean
from iacloud.loading.values import render
from iacloud.redact import DIAGNOSTIC_MASK
from iacloud.site import CATALOG_CONSTRAINTS, SiteCatalog, no_catalog_hint
from iacloud.stack import Constraint
from iacloud.validators import is_mac

APPLIES_TO = {
    "allowed_values": ("string", "number", "boolean", "list"),
    "range": ("number",),
    "length": ("string", "list", "map"),
    "allowed_pattern": ("string", "list"),
    "custom_constraint": ("string", "list"),
}


def _bounds_text(what: str, lo: float | None, hi: float | None) -> str:
    """Heat's wording for range and length constraints."""

    def fmt(x: float) -> str:
        return f"{x:g}" if isinstance(x, float) else str(x)

    if lo is None and hi is not None:
        return f"{what} must be no greater than {fmt(hi)}"
    if hi is None and lo is not None:
        return f"{what} must be at least {fmt(lo)}"
    return f"{what} must be in the range {fmt(lo)} to {fmt(hi)}"  # type: ignore[arg-type]


def _same_value(a: Any, b: Any) -> bool:
    # True == 1 in Python, but not in a stack file
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def constraint_problem(
    value: Any, c: Constraint, hide: bool, site: SiteCatalog | None = None
) -> str | None:
    """Heat's semantics: None when the value satisfies the constraint, else Heat's message."""
    if c.custom_constraint is not None:
        items = value if isinstance(value, list) else [value]
        for item in items:
            problem = custom_problem(c.custom_constraint, item, site)
            if problem:
                shown = DIAGNOSTIC_MASK if hide else render(item)
                return f"{shown} {problem}" if isinstance(value, list) else problem
        return None
    if c.allowed_values is not None:
        items = value if isinstance(value, list) else [value]
        bad = [v for v in items if not any(_same_value(v, a) for a in c.allowed_values)]
        if bad:
            allowed = DIAGNOSTIC_MASK if hide else render(c.allowed_values)
            one = DIAGNOSTIC_MASK if hide else render(bad[0])
            return f"{one} is not an allowed value {allowed}"
        return None
    if c.range is not None:
        lo, hi = c.range.min, c.range.max
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return _bounds_text("the value", lo, hi)
        return None
    if c.length is not None:
        lo, hi = c.length.min, c.length.max
        n = len(value)
        if (lo is not None and n < lo) or (hi is not None and n > hi):
            return f"length {n}: " + _bounds_text("the length", lo, hi)
        return None
    pattern = c.allowed_pattern or ""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, str) or not patterns.matches(pattern, item):
            one = DIAGNOSTIC_MASK if hide else render(item)
            return f'{one} does not match pattern "{pattern}"'
    return None


def constraint_text(c: Constraint) -> str:
    if c.kind == "range":
        assert c.range is not None
        return "range " + render(c.range.model_dump(exclude_none=True))
    if c.kind == "length":
        assert c.length is not None
        return "length " + render(c.length.model_dump(exclude_none=True))
    if c.kind == "allowed_pattern":
        return f'allowed_pattern "{c.allowed_pattern}"'
    if c.kind == "custom_constraint":
        return f"custom_constraint {c.custom_constraint}"
    return "allowed_values"


def custom_problem(name: str, value: Any, site: SiteCatalog | None) -> str | None:
    """Why `value` fails the custom constraint `name` (without the value), or None."""
    if not isinstance(value, str):
        return "is not a string"
    if name in CATALOG_CONSTRAINTS:
        section, noun = CATALOG_CONSTRAINTS[name]
        if site is None:
            return f"cannot be checked without a site catalog ({no_catalog_hint()})"
        known = site.section(section)
        if value in known:
            return None
        hint = did_you_mean(value, known)
        listed = ", ".join(sorted(known)) if len(known) <= 10 else f"{len(known)} {section}"
        suggestion = f"; {hint}" if hint else (f"; known: {listed}" if known else "")
        article = "an" if noun[0] in "aeiou" else "a"
        return f"is not {article} {noun} of the site catalog {site.path}{suggestion}"
    try:
        if name == "ip_addr":
            ipaddress.ip_address(value)
        elif name == "net_cidr":
            ipaddress.ip_network(value, strict=False)
        elif name == "mac_addr" and not is_mac(value.lower()):
            return "is not a MAC address like 52:54:00:12:34:56"
    except ValueError:
        what = "an IP address" if name == "ip_addr" else "a network in CIDR notation"
        return f"is not {what}"
    return None
