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


def test_each_address_counts_on_its_prefix_record_which_outlives_it_and_a_new_table() -> None:
    from switchboard.router.traffic import MAX_RPC_SERIES, OTHER_LABEL

    table = AddressTable((AddressConfig("a/", "multicast"), AddressConfig("a/b/", "closest"), *DEFAULT_ADDRESSES))
    ab, a = table.get("a/b/x"), table.get("a/y")
    assert (ab.traffic.prefix, a.traffic.prefix, table.get("zzz").traffic.prefix) == ("a/b/", "a/", "")
    assert table.get("a/b/z").traffic is ab.traffic
    assert table.add_dynamic("_dynamic/r1/1").traffic is table.traffic.dynamic
    assert table.get("_dynamic/r2/7").traffic is table.traffic.dynamic  # another router's reply address
    ab.traffic.received += 3
    table.release_if_unused(ab)
    # The configuration reloaded without "a/b/": its counts stay; "a/" keeps its record.
    reloaded = AddressTable((AddressConfig("a/", "multicast"), *DEFAULT_ADDRESSES), traffic=table.traffic)
    assert reloaded.get("a/b/x").traffic is a.traffic
    assert table.traffic.for_prefix("a/b/").received == 3
    # The same, reloaded in place: an address in use counts under its new prefix from then on.
    live = table.get("a/b/live")
    table.reconfigure((AddressConfig("a/", "multicast"), AddressConfig("c/", "closest"), *DEFAULT_ADDRESSES))
    assert live.traffic is a.traffic and table.get("c/1").traffic.prefix == "c/"
    assert {"a/b/", "a/", "c/", ""} <= set(table.traffic.prefixes)

    # RPC addresses get their topic (one per exchange and topic, servers together); the
    # series are bounded whatever names clients invent.
    topic = table.get("rpc/nova/compute").rpc
    assert topic is not None and (topic.exchange, topic.topic) == ("nova", "compute")
    assert table.get("rpc/nova/compute/host%2F1").rpc is topic
    assert table.get("rpc-fanout/nova/compute").rpc is None and table.get("work/x").rpc is None
    assert topic.series(None) is topic.series(OTHER_LABEL)
    for n in range(MAX_RPC_SERIES + 10):
        topic.series(f"m{n}")
    assert len(topic.methods) == MAX_RPC_SERIES  # (other) among them: the rest went there
    assert topic.series("m999999") is topic.methods[OTHER_LABEL]


def test_management_addresses_are_answered_by_routers_whatever_the_prefixes() -> None:
    table = AddressTable([AddressConfig("", "multicast")], router_id="r1")  # every other address is multicast
    for name in ("$management", "$management/r1", "$management/r2"):
        assert table.distribution_of(name) == "management"
    assert table.get("$management/r1").owner is None  # this router's own
    assert table.get("$management/r2").owner == "r2"  # sent toward r2
