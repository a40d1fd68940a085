"""The address table: longest prefix wins; records live while something uses them."""

from switchboard.router.addresses import AddressTable
from switchboard.router.config import AddressConfig, DEFAULT_ADDRESSES


def test_longest_prefix_wins() -> None:
    table = AddressTable((AddressConfig("a/", "multicast"), AddressConfig("a/b/", "closest"), *DEFAULT_ADDRESSES))
    assert table.distribution_of("a/x") == "multicast"
    assert table.distribution_of("a/b/x") == "closest"
    assert table.distribution_of("a") == "balanced"
    assert table.distribution_of("multicast/news") == "multicast"
    assert table.distribution_of("closest/svc") == "closest"
    assert table.distribution_of("rpc.topic") == "balanced"


def test_records_are_shared_and_released_when_unused() -> None:
    table = AddressTable(DEFAULT_ADDRESSES)
    first = table.get("svc")
    assert table.get("svc") is first
    assert len(table) == 1
    table.release_if_unused(first)
    assert table.find("svc") is None
    assert len(table) == 0


def test_dynamic_addresses_are_closest() -> None:
    table = AddressTable(DEFAULT_ADDRESSES)
    address = table.add_dynamic("_dynamic/r1/1")
    assert address.distribution == "closest"
    assert address.dynamic
    assert table.find("_dynamic/r1/1") is address


def test_management_addresses_are_answered_by_routers_whatever_the_prefixes() -> None:
    table = AddressTable([AddressConfig("", "multicast")], router_id="r1")  # every other address is multicast
    for name in ("$management", "$management/r1", "$management/r2"):
        assert table.distribution_of(name) == "management"
    assert table.get("$management/r1").owner is None  # this router's own
    assert table.get("$management/r2").owner == "r2"  # sent toward r2
