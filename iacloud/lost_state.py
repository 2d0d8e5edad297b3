"""A stack with no state whose objects still exist: found and reported instead of duplicated.

When a stack's state is lost (the file deleted, `--state` pointing elsewhere, a copy made
without its -wal), the next plan would see a stack never applied and create every object
again under a new stack id, beside the old ones. So before a plan creates anything for a stack
with no state, the objects carrying an ownership tag of a stack of that name are looked up:

- the stack ids a name had are noted on the host, beside the stack's working files
  (`<data dir>/stacks/<stack id>/stack.json`, written when apply begins a version and removed
  with those files by a complete destroy);
- every tagged object of the types of the providers the stack uses is listed (one bulk read
  per type); a libvirt domain's tag also names its stack, which finds the ids of stacks
  applied before the note existed; the objects of such an id (volumes carry the first 8
  characters of it) are reported.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from iacloud.config import StackConfig
from iacloud.errors import Diagnostic, IacloudError, UserError
from iacloud.paths import data_root
from iacloud.provider import ProviderSet, Registry, StackInfo, TaggedObject

INDEX = "stack.json"
_SHOWN = 5  # objects named in the message; the rest are counted


def remember(stack: StackInfo) -> None:
    """Note which stack name this stack id belongs to. Best effort: without the note only the
    lost-state check is weaker."""
    try:
        stack.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = stack.data_dir / f".{INDEX}.{os.getpid()}"
        tmp.write_text(json.dumps({"name": stack.name, "stack_id": stack.id}) + "\n")
        os.replace(tmp, stack.data_dir / INDEX)
    except OSError:
        pass


def known_ids(name: str, root: Path | None = None) -> set[str]:
    """The stack ids noted for a stack name on this host."""
    ids: set[str] = set()
    base = (root or data_root()) / "stacks"
    try:
        entries = list(base.iterdir())
    except OSError:
        return ids
    for d in entries:
        try:
            note = json.loads((d / INDEX).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(note, dict) and note.get("name") == name and note.get("stack_id") == d.name:
            ids.add(d.name)
    return ids


def _prefix(stack_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", stack_id)[:8]


def _owned(obj: TaggedObject, ids: set[str]) -> bool:
    if not obj.stack_id:
        return False
    return obj.stack_id in ids or any(obj.stack_id == _prefix(i) for i in ids)


def objects_of(
    name: str, providers: ProviderSet, registry: Registry, used: Iterable[str]
) -> list[TaggedObject]:
    """Tagged objects of an earlier stack of this name, among the types of the providers
    `used`: of a stack id noted for the name, or of one whose tags name it (domains)."""
    wanted = set(used)
    tagged: list[TaggedObject] = []
    for type_name in sorted(registry.types):
        if registry.provider_of[type_name] in wanted:
            tagged += providers.resource(type_name).list_tagged()
    ids = known_ids(name) | {o.stack_id for o in tagged if o.stack == name and o.stack_id}
    return [o for o in tagged if _owned(o, ids)] if ids else []


def check(config: StackConfig, providers: ProviderSet, registry: Registry, where: str) -> None:
    """Raise UserError when a stack with no state still has objects on this host."""
    if not config.resources:
        return
    used = {rc.provider for rc in config.resources.values() if rc.provider}
    try:
        found = objects_of(config.name, providers, registry, used)
    except IacloudError:
        return  # the host cannot be listed: the plan's own reads will say why
    if not found:
        return
    shown = ", ".join(f"{o.address or '?'} ({o.type} {o.id})" for o in found[:_SHOWN]) + (
        f" and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
    )
    ids = sorted({o.stack_id for o in found if o.stack_id})
    raise UserError(
        Diagnostic(
            f"state lost, objects present: stack '{config.name}' has no state in {where}, but "
            f"{len(found)} object(s) on this host carry the ownership tag of an earlier stack "
            f"'{config.name}' (stack id {', '.join(ids)}): {shown}. Nothing was changed; a "
            "plan now would create them all again beside the old ones",
            file=str(config.file),
            hint="restore the state (the state database together with its -wal file, or an "
            "earlier copy; --state URL if it lives elsewhere), or adopt each object with "
            "'iacloud import ADDRESS ID --stack FILE', or delete them",
        )
    )
