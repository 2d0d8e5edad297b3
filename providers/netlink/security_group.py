"""The `security_group` resource: a named list of firewall rules (a Neutron security group).

The group itself is a record in the host's security group facts (`iacloud.secgroups.facts`,
`/run/iacloud/secgroups/groups/<id>.json`); NICs that list it (server NICs, ports) are its
members, and every change of either rebuilds iacloud's nftables ruleset for the whole host
(`iacloud.secgroups.enforce`). Rule changes are live: the ruleset is replaced atomically and
conntrack entries the new rules no longer allow are dropped; no guest is touched.

Id: `sg-` + 10 hex digits of a hash of the stack id and the address, stable for the life of
the resource, so a NIC's `security_groups = [{ get_resource = ... }]` names it and a
`remote_group = "self"` can stand for the group's own id.

Reading: the record, and the rules nft really holds. A group rule is compiled once per
member NIC, tagged `<id>:<index>`; a rule missing from any member's chain (deleted by hand,
or the whole table gone) reads as missing from `rules`, so the next plan restores it. A group
without members has nothing in nft to compare and reads as recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from iacloud.errors import Diagnostic, ProviderError
from iacloud.provider import Collision, ObjectRef, Observed, Remaining, TaggedObject
from iacloud.providers.netlink.base import NetlinkResource
from iacloud.schema import Disruption, Inputs, prop
from iacloud.secgroups import enforce, facts
from iacloud.secgroups.compiler import Ruleset
from iacloud.secgroups.rules import GROUP_ID, Rule


class SecurityGroupInputs(Inputs):
    rules: list[Rule] = prop([], update=Disruption.LIVE, max_length=1000)
    description: str = prop("", update=Disruption.LIVE, max_length=255)


class SecurityGroup(NetlinkResource):
    type_name = "security_group"
    Inputs = SecurityGroupInputs
    attributes = ("id", "members")
    replace_collisions = (Collision("id (sg- and a hash of the stack id and address)"),)

    # ---- read ----------------------------------------------------------------------------

    def read(self, refs: Sequence[ObjectRef]) -> dict[str, Observed]:
        if not refs:
            return {}
        expected = enforce.expected()
        comments = enforce.rule_comments() if expected.expected else {}
        out = {}
        for ref in refs:
            gid = ref.id or facts.group_id(self.stack.id, ref.address)
            if not GROUP_ID.fullmatch(gid):
                continue
            record = facts.read_group(gid)
            if record is None:
                continue
            out[ref.address] = self._observe(record, expected, comments)
        return out

    def _observe(
        self,
        record: facts.GroupRecord,
        expected: Ruleset,
        comments: dict[str, set[str]],
    ) -> Observed:
        wanted = expected.expected.get(record.id, {})
        rules = [
            rule.model_dump(mode="json")
            for i, rule in enumerate(record.rules)
            if all(f"{record.id}:{i}" in comments.get(chain, ()) for chain in wanted.get(i, ()))
        ]
        members = sorted(
            {f"{m.bridge}/{m.mac}" for m in facts.merged(facts.members()) if record.id in m.groups}
        )
        # the description is only recorded by the engine: left out, it keeps the recorded one
        inputs = {"rules": rules}
        return Observed(
            id=record.id, inputs=inputs, attributes={"id": record.id, "members": members}
        )

    def _read_one(self, gid: str) -> Observed:
        record = facts.read_group(gid)
        if record is None:
            raise ProviderError(f"security group {gid} has no record")
        expected = enforce.expected()
        comments = enforce.rule_comments() if expected.expected else {}
        return self._observe(record, expected, comments)

    # ---- changes -------------------------------------------------------------------------

    def create(self, address: str, inputs: Inputs) -> Observed:
        assert isinstance(inputs, SecurityGroupInputs)
        gid = facts.group_id(self.stack.id, address)
        record = facts.GroupRecord(gid, self.stack.id, address, tuple(inputs.rules))
        try:
            with enforce.change(force=True):
                facts.write_group(record)
        except BaseException:
            try:
                with enforce.change():
                    facts.remove_group(gid)
            except Exception:
                pass
            raise
        return self._read_one(gid)

    def update(
        self, address: str, prior: Observed, inputs: Inputs, changed: frozenset[str]
    ) -> Observed:
        assert isinstance(inputs, SecurityGroupInputs)
        old = facts.read_group(prior.id)
        if old is None:
            raise ProviderError(f"security group {address} ({prior.id}) no longer exists")
        with enforce.change(force=True):
            facts.write_group(
                facts.GroupRecord(old.id, old.stack_id, old.address, tuple(inputs.rules))
            )
        return self._read_one(old.id)

    def _in_use(self, address: str, gid: str) -> str | None:
        """Why the group cannot go: NICs or ports of another stack list it (Neutron's "in
        use"); they would lose every rule it gave them. This stack's own members are deleted
        or updated before the group is (they depend on it)."""
        users = sorted(
            f"{m.address} of stack {m.stack_id}"
            for m in facts.members()
            if gid in m.groups and m.stack_id != self.stack.id
        )
        if not users:
            return None
        return (
            f"security group {address} ({gid}) is still in use by "
            + ", ".join(users[:5])
            + (f" and {len(users) - 5} more" if len(users) > 5 else "")
            + ": remove it from their security_groups first"
        )

    def check_delete(
        self, address: str, prior: Observed, remaining: Mapping[str, Remaining]
    ) -> list[Diagnostic]:
        problem = self._in_use(address, prior.id) if GROUP_ID.fullmatch(prior.id or "") else None
        return [Diagnostic(problem, address=address)] if problem else []

    def delete(self, address: str, prior: Observed) -> None:
        if not GROUP_ID.fullmatch(prior.id or ""):
            return
        with enforce.change():
            problem = self._in_use(address, prior.id)
            if problem:
                raise ProviderError(problem)
            facts.remove_group(prior.id)

    def import_(self, address: str, id: str) -> Observed:
        if not GROUP_ID.fullmatch(id):
            raise ProviderError(f"{id!r} is not a security group id (sg- and 10 hex digits)")
        if facts.read_group(id) is None:
            raise ProviderError(f"there is no security group {id} on this host")
        return self._read_one(id)

    def list_tagged(self) -> list[TaggedObject]:
        return [TaggedObject("security_group", g.id, g.stack_id, g.address) for g in facts.groups()]
