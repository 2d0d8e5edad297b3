"""Load-time checks (`validate`, `plan`) that storage references name the right kind of resource.

A volume's `snapshot` must name a `volume_snapshot` and its `image` must not; a snapshot's
`volume` must name a `volume`; a server's `boot_volume` and `volumes` must not name a snapshot
(it is read-only: a volume is made from it). Without these checks the mistake would show only
at apply (a snapshot of an image, a server refused its disk) or never (a volume whose read
reports its snapshot as an image, and so never stops drifting). Only references to another
resource of the stack (`get_resource`, or `get_attr` of its id) are checked; literal ids are
checked by the types' own validation.
"""

from __future__ import annotations

from collections.abc import Mapping

from iacloud.errors import Diagnostic
from iacloud.stack_view import Reference, ResourceView

# (resource type, field): the type its reference must name (True) or must not name (False)
RULES: dict[tuple[str, str], tuple[str, bool]] = {
    ("volume", "snapshot"): ("volume_snapshot", True),
    ("volume", "image"): ("volume_snapshot", False),
    ("volume_snapshot", "volume"): ("volume", True),
    ("server", "boot_volume"): ("volume_snapshot", False),
    ("server", "volumes"): ("volume_snapshot", False),
}
_MAKE_VOLUME = "make a volume from the snapshot (`snapshot = ...` on a volume) and use that"
HINTS = {
    ("volume", "image"): "to make a volume from a snapshot, write `snapshot = ...` instead",
    ("server", "boot_volume"): _MAKE_VOLUME,
    ("server", "volumes"): _MAKE_VOLUME,
}


def _named_type(ref: Reference, resources: Mapping[str, ResourceView]) -> str | None:
    """The type of the resource a reference names; "" for one of another provider; None when
    it cannot be told here (a whole counted group, an attribute other than the id)."""
    if ref.attribute not in (None, "id") or ref.path:
        return None
    if ref.address in resources:
        return resources[ref.address].type
    if any(a.startswith(f"{ref.address}[") for a in resources):
        return None  # a whole counted group: not one id, reported by the schema
    return ""


def _a(type_name: str) -> str:
    return f"{'an' if type_name[0] in 'aeiou' else 'a'} {type_name}"


def check_references(resources: Mapping[str, ResourceView]) -> list[Diagnostic]:
    out = []
    for address, view in resources.items():
        for (type_name, field), (wanted, must) in RULES.items():
            value = view.properties.get(field) if view.type == type_name else None
            for ref in value if isinstance(value, list) else [value]:
                if not isinstance(ref, Reference):
                    continue
                named = _named_type(ref, resources)
                if named is None or (named == wanted) == must:
                    continue
                kind = _a(named) if named else "a resource of another provider"
                expected = _a(wanted) if must else f"anything but {_a(wanted)}"
                out.append(
                    Diagnostic(
                        f"'{field}' names {ref.address}, {kind}; expected {expected}",
                        address=address,
                        field=field,
                        hint=HINTS.get((type_name, field)),
                    )
                )
    return out
