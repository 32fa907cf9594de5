"""The SQL runtime macros (analyzer/sql/runtime.py) against Python's
ipaddress: IPv4 and IPv6 parsing in every spelling, CIDR membership for any
prefix length, and malformed text yielding NULL rather than an error."""

from __future__ import annotations

import ipaddress

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analyzer.sql.runtime import install_runtime
from analyzer.sql.values import ip_bits, ip_network_prefix


@pytest.fixture(scope="module")
def con():
    connection = duckdb.connect()
    install_runtime(connection)
    yield connection
    connection.close()


def spellings(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> st.SearchStrategy[str]:
    if address.version == 4:
        return st.just(str(address))
    forms = [address.compressed, address.exploded, address.compressed.upper()]
    if address.ipv4_mapped is not None:
        forms.append(f"::ffff:{address.ipv4_mapped}")
    return st.sampled_from(forms)


addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6),
                      st.ip_addresses(v=4).map(lambda a: ipaddress.IPv6Address(f"::ffff:{a}")))


@given(data=st.data(), address=addresses)
def test_ip_bits_parses_every_spelling(con, data, address):
    text = data.draw(spellings(address))
    assert con.execute("SELECT _ip_bits(?)", [text]).fetchall()[0][0] == ip_bits(address)


@given(address=addresses, network=addresses, data=st.data())
def test_ip_in_nets_is_cidr_membership(con, address, network, data):
    prefix = data.draw(st.integers(0, network.max_prefixlen))
    cidr = f"{network}/{prefix}"
    expected = address.version == network.version and address in ipaddress.ip_network(cidr, strict=False)
    got = con.execute("SELECT _ip_in_nets(?, [?])", [str(address), ip_network_prefix(cidr)]).fetchall()[0][0]
    assert got is expected


@given(text=st.text(alphabet="0123456789abcdefABCDEF.:/x -", max_size=45))
def test_malformed_addresses_are_null_not_errors(con, text):
    try:
        expected = ip_bits(ipaddress.ip_address(text))
    except ValueError:
        expected = None
    assert con.execute("SELECT _ip_bits(?)", [text]).fetchall()[0][0] == expected
    assert con.execute("SELECT _ip_in_nets(?, ['4:'])", [text]).fetchall()[0][0] is (
        None if expected is None else expected.startswith("4:"))
