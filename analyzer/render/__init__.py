"""libsinsp's rendering of event parameters (`evt.arg.*`, `evt.args`, `evt.res`).

* `flags`: value tables (open flags, errno, clone flags, ptrace requests, ...)
  as SQL expressions and as Python functions built from the same data;
* `params`: libsinsp's parameter names per event type and the SQL that
  renders them for the `events` view's `_evt_args` map and `evt.args`.
"""

from __future__ import annotations

import duckdb

_MACROS = (
    "CREATE OR REPLACE TEMP MACRO trace_octal(n) AS format('{:o}', n)",
    # '<f>/etc' -> '/etc': the path inside a rendered fd.
    "CREATE OR REPLACE TEMP MACRO trace_desc_path(d) AS regexp_replace(d, '^<[^>]*>', '')",
)


def install_macros(con: duckdb.DuckDBPyConnection) -> None:
    for statement in _MACROS:
        con.execute(statement)
