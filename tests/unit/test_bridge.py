"""`--docker-bridge`'s address: the one named or found, never every address."""

from __future__ import annotations

import sys

import pytest

from tokenvend.local.bridge import BridgeError, bridge_address


@pytest.mark.parametrize("value", ["172.17.0.1", "10.0.0.5", "fd00::1"])
def test_an_address_is_taken_as_it_is(value: str) -> None:
    assert bridge_address(value) == value


@pytest.mark.parametrize("value", ["0.0.0.0", "::", "224.0.0.1"])
def test_every_address_is_refused(value: str) -> None:
    with pytest.raises(BridgeError, match="never every address"):
        bridge_address(value)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="interfaces read on Linux")
def test_an_interface_is_read_for_its_ipv4_address() -> None:
    assert bridge_address("lo") == "127.0.0.1"


@pytest.mark.parametrize("value", ["tvnoif0", "x" * 40, "bad/name"])
def test_an_unknown_interface_says_what_to_do(value: str) -> None:
    with pytest.raises(BridgeError, match=r"is Docker running\? .*--docker-bridge 172\.17\.0\.1"):
        bridge_address(value)
