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
    # IPv6: optional dotted IPv4 tail (::ffff:1.2.3.4), then '::' expanded
    # to the missing zero groups. Intermediate values are bound once with
    # single-element list_transform lambdas: nested macros would repeat
    # their arguments and make binding exponentially slow.
    f"""CREATE OR REPLACE MACRO _ip6_bits(s) AS CASE WHEN contains(s, ':') THEN list_transform(
        [CASE WHEN regexp_matches(s, '(^|:){_IPV4}$')
              THEN [regexp_replace(regexp_replace(s, '{_IPV4}$', ''), '([^:]):$', '\\1'),
                    _ip4_bits(regexp_extract(s, '{_IPV4}$'))]
              ELSE [s, ''] END],
        lambda head_tail: list_transform(
            [list_transform(string_split(head_tail[1], '::'),
                            lambda p: CASE WHEN p = '' THEN []::VARCHAR[] ELSE string_split(p, ':') END)],
            lambda halves: list_transform(
                [CASE WHEN len(halves) = 1 THEN halves[1]
                      WHEN len(halves) = 2 THEN list_concat(halves[1],
                          list_transform(range(greatest(8 - len(head_tail[2]) // 16 - len(halves[1]) - len(halves[2]), 0)),
                                         lambda i: '0'),
                          halves[2]) END],
                lambda g: CASE WHEN len(g) = 8 - len(head_tail[2]) // 16
                    AND len(list_filter(g, lambda x: NOT regexp_full_match(x, '[0-9a-fA-F]{{1,4}}'))) = 0
                    THEN array_to_string(list_transform(g, lambda x: lpad(bin(('0x' || x)::INTEGER), 16, '0')), '')
                         || head_tail[2] END)[1])[1])[1] END""",
    "CREATE OR REPLACE MACRO _ip_bits(s) AS coalesce('4:' || _ip4_bits(s), '6:' || _ip6_bits(s))",
    # Whether an address lies in any of the networks given as bit prefixes;
    # NULL (not false) when the address is missing or malformed.
    """CREATE OR REPLACE MACRO _ip_in_nets(s, prefixes) AS list_transform([_ip_bits(s)],
        lambda b: CASE WHEN b IS NOT NULL THEN len(list_filter(prefixes, lambda p: starts_with(b, p))) > 0 END)[1]""",
)


def install_runtime(con) -> None:
    """Create the macros compiled conditions use (idempotent)."""
    for statement in MACROS:
        con.execute(statement)
