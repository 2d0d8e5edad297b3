"""Shared validators for names and addresses that reach the host: interface names and MACs.

Every provider checks these the same way, with full matches, so a name one provider accepts
the other does not refuse (a network's bridge is a server NIC's bridge).
"""

from __future__ import annotations

import re

# a Linux interface name: 1-15 characters (IFNAMSIZ - 1); not starting with '.' or '-', so never
# '.' or '..' (the kernel refuses them; they would escape a directory named after the bridge)
# and never read as a command-line option
INTERFACE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")
INTERFACE_NAME_RULE = "1-15 of A-Z a-z 0-9 _ . -, not starting with . or -"

# six lower-case hex pairs separated by ':' (callers lower-case first)
MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")


def is_interface_name(name: object) -> bool:
    return isinstance(name, str) and INTERFACE_NAME.fullmatch(name) is not None


def is_mac(mac: object) -> bool:
    """Six lower-case hex pairs: the canonical form (lower-case a given MAC before asking)."""
    return isinstance(mac, str) and MAC.fullmatch(mac) is not None


def is_multicast_mac(mac: str) -> bool:
    """The group bit of the first octet: a NIC cannot own such an address."""
    return bool(int(mac[:2], 16) & 1)


def is_unicast_mac(mac: object) -> bool:
    """A MAC a NIC can have: canonical, not multicast and not all zeros."""
    return is_mac(mac) and not is_multicast_mac(str(mac)) and mac != "00:00:00:00:00:00"
