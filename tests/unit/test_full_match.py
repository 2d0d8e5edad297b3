"""Issue 10 item 13: validators match the whole value; a trailing newline is not accepted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from iacloud import expressions as ex
from iacloud.errors import ProviderError
from iacloud.providers.libvirt import seed, storage, tags

REFUSED: list[tuple[str, Callable[[], Any]]] = [
    ("hostname", lambda: seed.check_hostname("web\n")),
    ("instance id", lambda: seed.meta_data("i-1\n", "web", [])),
    ("seed mac", lambda: seed.network_config(["52:54:00:00:00:01\n"])),
    ("volume id", lambda: storage.split_id("default/vol1\n")),
    ("pool name", lambda: tags.check_object_name("default\n", "pool name")),
    ("address", lambda: tags.check_address("web[0]\n")),
    ("stack name", lambda: tags.domain_name("lab\n", "3fa2b1c4", "web")),
]


@pytest.mark.parametrize("case", REFUSED, ids=[name for name, _ in REFUSED])
def test_trailing_newline_is_refused(case: tuple[str, Callable[[], Any]]) -> None:
    with pytest.raises(ProviderError):
        case[1]()


def test_volume_name_with_newline_is_not_ours() -> None:
    assert tags.parse_volume_name("iac-3fa2b1c4-web.0.root.qcow2") is not None
    assert tags.parse_volume_name("iac-3fa2b1c4-web.0.root.qcow2\n") is None


def test_address_with_newline_is_refused() -> None:
    with pytest.raises(ex.ExpressionError):
        ex.parse_address("web\n")
    assert ex.parse_address("web[2]") == ("web", 2)


def test_valid_values_still_pass() -> None:
    assert seed.check_hostname("web-0.lab") == "web-0.lab"
    assert storage.split_id("default/vol1") == ("default", "vol1")
