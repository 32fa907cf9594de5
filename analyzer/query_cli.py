"""`trace query SQL CAPTURE...`: ad hoc SQL over the `events`, `processes` and `fds` views.

Quoting convention for Falco field names: a bare dotted name that is a
column of `events` (`proc.name`, `fd.sip`, `evt.type`, ...) is rewritten to
the quoted identifier `"proc.name"` before DuckDB sees the query. Only
text outside string literals, quoted identifiers and comments is touched,
so `'proc.name'` stays a string and `"proc.name"` is already a column. A
prefixed name (`e.proc.name`) becomes `e."proc.name"`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable

import click
import duckdb

from analyzer.errors import TraceError

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)+")
# Pieces of SQL that are never rewritten: 'strings', "identifiers", comments.
_OPAQUE = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/", re.S)


def quote_field_names(sql: str, fields: Iterable[str]) -> str:
    """Rewrite bare Falco field names in `sql` into quoted identifiers."""
    known = set(fields)

    def rewrite_token(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in known:
            return f'"{token}"'
        head, _, rest = token.partition(".")
        if rest in known:
            return f'{head}."{rest}"'
        return token

    out, pos = [], 0
    for opaque in _OPAQUE.finditer(sql):
        out.append(_DOTTED.sub(rewrite_token, sql[pos : opaque.start()]))
        out.append(opaque.group(0))
        pos = opaque.end()
    out.append(_DOTTED.sub(rewrite_token, sql[pos:]))
    return "".join(out)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _cell(value: object) -> str:
    """A value as table text; control characters escaped (a capture must not drive the terminal)."""
    if value is None:
        text = "NULL"
    elif isinstance(value, (list, dict)):
        text = json.dumps(value, default=str, ensure_ascii=False)
    else:
        text = str(value)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)


def render_table(columns: list[str], rows: list[tuple]) -> str:
    cells = [[_cell(c) for c in columns]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines) + f"\n({len(rows)} row{'s' if len(rows) != 1 else ''})\n"


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


@click.command("query")
@click.argument("sql")
@click.argument("captures", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="json: one JSON object per line")
@click.option("--since", help="only events at or after this time (ISO-8601 or epoch seconds)")
@click.option("--until", help="only events before this time")
def query(sql: str, captures: tuple[str, ...], fmt: str, since: str | None, until: str | None) -> None:
    """Run SQL over the `events`, `processes` and `fds` views of CAPTURE(s).

    Falco field names may be written bare: `proc.name` means the column
    "proc.name". Example:

      trace query "select proc.name, count(*) from events group by 1" cap/
    """
    from analyzer.state import open_captures, parse_time

    with open_captures(
        list(captures),
        since=parse_time(since) if since else None,
        until=parse_time(until) if until else None,
    ) as cs:
        for warning in cs.warnings:
            click.echo(f"trace: warning: {warning}", err=True)
        fields = [d[0] for d in cs.con.execute("SELECT * FROM events LIMIT 0").description if "." in d[0]]
        try:
            result = cs.con.execute(quote_field_names(sql, fields))
            columns = [d[0] for d in result.description] if result.description else []
            rows = result.fetchall()
        except duckdb.Error as exc:
            raise TraceError(f"query failed: {str(exc).strip()}") from exc
    # color=True: click must not strip escape sequences out of CSV/JSON data (the table escapes them)
    click.echo(format_rows(fmt, columns, rows), nl=False, color=True)


def format_rows(fmt: str, columns: list[str], rows: list[tuple]) -> str:
    if fmt == "table":
        return render_table(columns, rows)
    out = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if v is None else json.dumps(_jsonable(v)) if isinstance(v, (list, dict)) else v
                             for v in row])
    else:
        for row in rows:
            out.write(json.dumps({c: _jsonable(v) for c, v in zip(columns, row)}, ensure_ascii=False) + "\n")
    return out.getvalue()
