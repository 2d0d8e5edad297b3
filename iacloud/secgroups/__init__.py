"""Security groups (Neutron's model), shared by the providers that own filtered NICs.

`rules` (the rule model), `facts` (groups and memberships as host-local files), `compiler`
(groups + members -> one nft ruleset, a pure function), `nft` (applying and reading it back)
and `conntrack` (dropping tracked connections the new rules no longer allow). `rebuild` ties
them together under a host-wide file lock. Imports no provider code: the netlink provider
(security_group, port) and the libvirt provider (server NICs) both use it.
"""
