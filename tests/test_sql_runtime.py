"""IP matching in plain SQL against Python's ipaddress: the runtime macros
parse IPv4 and IPv6 in every spelling (malformed text is NULL, not an
error), and the compiler's CIDR checks agree with network membership for
every prefix length of both families."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from analyzer.sql.generator import _in_network


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
def test_addresses_parse_in_every_spelling(runtime_con, data, address):
    text = data.draw(spellings(address))
    v4, v6 = runtime_con.execute("SELECT _ip4_num(?), _ip6_num(?)", [text, text]).fetchall()[0]
    assert (v4, v6) == ((int(address), None) if address.version == 4 else (None, int(address)))


@given(address=addresses, network=addresses, data=st.data())
def test_cidr_checks_are_network_membership(runtime_con, address, network, data):
    prefix = data.draw(st.integers(0, network.max_prefixlen))
    net = ipaddress.ip_network(f"{network}/{prefix}", strict=False)
    expected = address.version == net.version and address in net
    got = runtime_con.execute(f"SELECT {_in_network('a', net)} FROM (SELECT ? AS a)", [str(address)]).fetchall()[0][0]
    assert got is expected, (str(address), str(net))


@given(text=st.text(alphabet="0123456789abcdefABCDEF.:/x -", max_size=45))
def test_malformed_addresses_are_null_not_errors(runtime_con, text):
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        address = None
    v4, v6 = runtime_con.execute("SELECT _ip4_num(?), _ip6_num(?)", [text, text]).fetchall()[0]
    assert v4 == (int(address) if address is not None and address.version == 4 else None)
    assert v6 == (int(address) if address is not None and address.version == 6 else None)
