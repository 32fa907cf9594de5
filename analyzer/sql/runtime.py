"""SQL macros the compiled conditions call, created on a connection by
`install_runtime(con)` before any compiled SQL runs on it.

DuckDB's inet extension cannot be installed offline, so IP addresses are
handled in plain SQL: ``_ip4_num(text)`` and ``_ip6_num(text)`` turn an
address into its number (BIGINT / UHUGEINT; NULL when the text is not an
address of that family), so CIDR membership is a range test.
"""

from __future__ import annotations

import re

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = _UPPER.lower()
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(\.{_OCTET}){{3}}"

MACROS = (
    # libsinsp folds case with the C library's tolower: ASCII only. lower()
    # is exact on ASCII text (bytes == characters) and 30x faster than
    # translate(), which only non-ASCII text pays for.
    f"""CREATE OR REPLACE MACRO _ascii_lower(s) AS
        CASE WHEN strlen(s) = length(s) THEN lower(s) ELSE translate(s, '{_UPPER}', '{_LOWER}') END""",
    f"""CREATE OR REPLACE MACRO _ascii_upper(s) AS
        CASE WHEN strlen(s) = length(s) THEN upper(s) ELSE translate(s, '{_LOWER}', '{_UPPER}') END""",
    # pmatch compares whole path components; empty components are skipped
    # (libsinsp's path_prefix_map splits on '/' and drops empty parts). An
    # absolute path without '//' (the common case) needs no regex.
    """CREATE OR REPLACE MACRO _path_norm(s) AS CASE
        WHEN starts_with(s, '/') AND NOT contains(s, '//') THEN CASE WHEN ends_with(s, '/') THEN s ELSE s || '/' END
        ELSE regexp_replace('/' || s || '/', '/+', '/', 'g') END""",
    # IP addresses as numbers. The compiler matches IPv4 networks on the
    # canonical dotted quad directly (a text prefix and at most one octet
    # range, see analyzer.sql.generator), which is ~100x faster than parsing;
    # IPv6 (rare) is parsed into a UHUGEINT here.
    f"""CREATE OR REPLACE MACRO _ip4_num(s) AS CASE WHEN regexp_full_match(s, '{_IPV4}') THEN
        (split_part(s, '.', 1)::BIGINT << 24) | (split_part(s, '.', 2)::BIGINT << 16)
        | (split_part(s, '.', 3)::BIGINT << 8) | split_part(s, '.', 4)::BIGINT END""",
    # Eight hex groups: a dotted IPv4 tail becomes two groups, '::' the
    # missing zero groups. Single-element list_transform binds each stage
    # once (nested macros would repeat their argument).
    f"""CREATE OR REPLACE MACRO _ip6_groups(s) AS list_transform(
        [CASE WHEN regexp_matches(s, '(^|:){_IPV4}$')
              THEN list_transform([_ip4_num(regexp_extract(s, '{_IPV4}$'))],
                   lambda _n: regexp_replace(s, '{_IPV4}$', '') || printf('%x:%x', _n >> 16, _n & 65535))[1]
              ELSE s END],
        lambda _t: list_transform(
            [CASE WHEN ends_with(_t, '::') THEN _t || '0' ELSE _t END],
            lambda _u: list_transform(
                [CASE WHEN starts_with(_u, '::') THEN '0' || _u ELSE _u END],
                lambda _w: CASE WHEN contains(_w, '::') THEN replace(_w, '::',
                    ':' || repeat('0:', greatest(8 - (length(_w) - length(replace(_w, ':', ''))), 0))) ELSE _w END
            )[1])[1])[1]""",
    """CREATE OR REPLACE MACRO _ip6_num(s) AS CASE WHEN contains(s, ':') THEN list_transform([_ip6_groups(s)],
        lambda _g: CASE WHEN regexp_full_match(_g, '([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}') THEN
            (('0x' || split_part(_g, ':', 1))::INTEGER::UHUGEINT << 112)
          | (('0x' || split_part(_g, ':', 2))::INTEGER::UHUGEINT << 96)
          | (('0x' || split_part(_g, ':', 3))::INTEGER::UHUGEINT << 80)
          | (('0x' || split_part(_g, ':', 4))::INTEGER::UHUGEINT << 64)
          | (('0x' || split_part(_g, ':', 5))::INTEGER::UHUGEINT << 48)
          | (('0x' || split_part(_g, ':', 6))::INTEGER::UHUGEINT << 32)
          | (('0x' || split_part(_g, ':', 7))::INTEGER::UHUGEINT << 16)
          | ('0x' || split_part(_g, ':', 8))::INTEGER::UHUGEINT END)[1] END""",
)


def install_runtime(con) -> None:
    """Create the macros compiled conditions use (idempotent)."""
    for statement in MACROS:
        con.execute(statement)


# The macros above that run a regular expression.
_REGEX_SQL = re.compile(r"\bregexp_|\b(_path_norm|_ip4_num|_ip6_groups|_ip6_num)\(")


def uses_regex(sql: str) -> bool:
    """Whether compiled SQL runs a regular expression (directly or in a macro):
    DuckDB 2.0 does not push such a filter below a join."""
    return _REGEX_SQL.search(sql) is not None
