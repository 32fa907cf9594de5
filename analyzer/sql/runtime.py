"""SQL macros the compiled conditions call, created on a connection by
`install_runtime(con)` before any compiled SQL runs on it.

DuckDB's inet extension cannot be installed offline, so IP addresses are
handled here in plain SQL: ``_ip_bits(text)`` turns an address into its
family tag and bit string ('4:' + 32 bits, '6:' + 128 bits, NULL when the
text is not an address), so CIDR membership is a prefix test on that string
for any prefix length. ``analyzer.sql.values.ip_bits`` computes the same
form for literals at compile time.
"""

from __future__ import annotations

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = _UPPER.lower()
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(\.{_OCTET}){{3}}"

MACROS = (
    # libsinsp folds case with the C library's tolower: ASCII only.
    f"CREATE OR REPLACE MACRO _ascii_lower(s) AS translate(s, '{_UPPER}', '{_LOWER}')",
    f"CREATE OR REPLACE MACRO _ascii_upper(s) AS translate(s, '{_LOWER}', '{_UPPER}')",
    # pmatch compares whole path components; empty components are skipped
    # (libsinsp's path_prefix_map splits on '/' and drops empty parts).
    "CREATE OR REPLACE MACRO _path_norm(s) AS regexp_replace('/' || s || '/', '/+', '/', 'g')",
    f"""CREATE OR REPLACE MACRO _ip4_bits(s) AS CASE WHEN regexp_full_match(s, '{_IPV4}')
        THEN array_to_string(list_transform(string_split(s, '.'),
             lambda o: lpad(bin(o::INTEGER), 8, '0')), '') END""",
    "CREATE OR REPLACE MACRO _ip6_part(p) AS CASE WHEN p = '' THEN []::VARCHAR[] ELSE string_split(p, ':') END",
    # The hex groups of an IPv6 address with n groups, '::' expanded.
    """CREATE OR REPLACE MACRO _ip6_groups(s, n) AS CASE
        WHEN NOT contains(s, '::') THEN string_split(s, ':')
        WHEN len(string_split(s, '::')) <> 2 THEN NULL
        ELSE list_concat(
            _ip6_part(split_part(s, '::', 1)),
            list_transform(range(greatest(n - len(_ip6_part(split_part(s, '::', 1)))
                                           - len(_ip6_part(split_part(s, '::', 2))), 0)), lambda i: '0'),
            _ip6_part(split_part(s, '::', 2))) END""",
    """CREATE OR REPLACE MACRO _ip6_group_bits(g, n) AS CASE
        WHEN len(g) = n AND len(list_filter(g, lambda x: NOT regexp_full_match(x, '[0-9a-fA-F]{1,4}'))) = 0
        THEN array_to_string(list_transform(g, lambda x: lpad(bin(('0x' || x)::INTEGER), 16, '0')), '') END""",
    # An IPv6 address may end in a dotted IPv4 address (::ffff:1.2.3.4).
    f"""CREATE OR REPLACE MACRO _ip6_bits(s) AS CASE
        WHEN NOT contains(s, ':') THEN NULL
        WHEN contains(s, '.') THEN CASE WHEN regexp_matches(s, '(^|:){_IPV4}$') THEN
            _ip6_group_bits(_ip6_groups(regexp_replace(regexp_replace(s, '{_IPV4}$', ''), '([^:]):$', '\\1'), 6), 6)
            || _ip4_bits(regexp_extract(s, '{_IPV4}$')) END
        WHEN regexp_matches(s, '(^:[^:])|([^:]:$)') THEN NULL
        ELSE _ip6_group_bits(_ip6_groups(s, 8), 8) END""",
    "CREATE OR REPLACE MACRO _ip_bits(s) AS coalesce('4:' || _ip4_bits(s), '6:' || _ip6_bits(s))",
)


def install_runtime(con) -> None:
    """Create the macros compiled conditions use (idempotent)."""
    for statement in MACROS:
        con.execute(statement)
