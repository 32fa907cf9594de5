"""Condition AST -> DuckDB SQL boolean expression over the `events` view.

In the style of sqlglot's generators: one method per node type
(``or_sql``, ``comparison_sql``, ...), and an ``unsupported()`` path that
raises a located error naming the rule, the field and the reason instead of
emitting SQL that would mean something else.

Semantics follow libsinsp (filter_compare.cpp, sinsp_filter_check::compare):

* a check on a missing (NULL) value is false for every operator, ``!=``
  included, and ``not`` turns it true. A check's SQL may yield NULL for a
  missing value; under only AND/OR a NULL decides exactly as false would, so
  ``coalesce(..., false)`` is applied where it matters: on each check under
  a NOT (pushed down to the checks), on each ``oneof`` term, and around the
  whole condition (``definite``) except where it filters (``filter``);
* literals are parsed for the field's type at compile time (numbers with
  0x hex, booleans, IP addresses, CIDR networks) and reach SQL only through
  ``sql_string`` or as Python-formatted numbers;
* ancestor fields without index hold if any ancestor matches, for every
  operator; fd.ip/fd.port/fd.net hold for `=`/`in` if either end matches and
  for `!=` if both differ; list-valued fields take `in` as "every element in
  the set" and `intersects` as "some element in the set".
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Callable

from analyzer.condition import ast
from analyzer.errors import TraceError
from analyzer.fields.catalog import CATALOG, Catalog, FieldError, ResolvedField, sql_string
from analyzer.fields.spec import FieldType
from analyzer.sql import values

T = FieldType
NUMERIC = (T.INT, T.PORT, T.ABSTIME, T.RELTIME, T.DOUBLE)
_SQL_OPS = {"=": "=", "==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_EQUALITY_OPS = ("=", "==", "!=", "in", "intersects")
# Operators libsinsp accepts per field type (filter_compare.cpp flt_is_comparable_*).
ALLOWED_OPS = {
    T.STRING: ("=", "==", "!=", "<", "<=", ">", ">=", "contains", "icontains", "startswith", "endswith",
               "glob", "iglob", "regex", "in", "intersects", "pmatch", "exists"),
    T.BUFFER: ("=", "==", "!=", "contains", "bcontains", "startswith", "bstartswith", "endswith", "in",
               "intersects", "exists"),
    T.BOOL: ("=", "==", "!=", "in", "intersects", "exists"),
    T.IPADDR: _EQUALITY_OPS + ("exists",),
    T.IPNET: _EQUALITY_OPS + ("exists",),
    **{t: ("=", "==", "!=", "<", "<=", ">", ">=", "in", "intersects", "exists") for t in NUMERIC},
}
_LIST_OPS = ("in", "intersects", "exists")
_SIDES_OPS = ("=", "==", "!=", "in", "intersects", "exists")


class CompileError(TraceError):
    """A condition the compiler cannot turn into SQL. ``field`` and
    ``reason`` say why; ``span`` locates it in the condition text;
    ``invalid`` separates conditions libsinsp itself rejects from valid ones
    the capture cannot serve."""

    def __init__(self, reason: str, *, field: str | None = None, rule: str | None = None,
                 span: ast.Span = ast.NO_SPAN, invalid: bool = False, node: ast.Node | None = None) -> None:
        self.reason, self.field, self.rule, self.span, self.invalid = reason, field, rule, span, invalid
        self.node = node
        where = f"rule '{rule}': " if rule else ""
        what = f"field {field}: " if field else ""
        super().__init__(f"{where}{what}{reason} (at offset {span.start})")


@dataclass(frozen=True)
class Operand:
    """A compiled left-hand side or val() right-hand side."""

    sql: str
    type: FieldType
    display: str
    is_list: bool = False
    any_element: bool = False
    sides: tuple[str, ...] = ()


Predicate = Callable[[str], str]  # SQL of one scalar value -> SQL boolean


class Generator:
    def __init__(self, catalog: Catalog = CATALOG, rule: str | None = None) -> None:
        self.catalog = catalog
        self.rule = rule

    # ---------------------------------------------------------- helpers

    def unsupported(self, reason: str, node: ast.Node, field: str | None = None, *, invalid: bool = False):
        raise CompileError(reason, field=field, rule=self.rule, span=getattr(node, "span", ast.NO_SPAN),
                           invalid=invalid, node=node)

    def filter(self, node: ast.Node) -> str:
        """The condition for a WHERE or CASE WHEN, where NULL (a missing
        value) selects nothing, exactly as false. Without an enclosing
        coalesce() DuckDB evaluates its AND/OR as filters that narrow the
        rows as they go, so a rule's exceptions only run on the rows its
        main condition kept."""
        return self.sql(node)

    def sql(self, node: ast.Node):
        method = getattr(self, f"{type(node).__name__.lower()}_sql", None)
        if method is None:
            self.unsupported(f"unexpected {type(node).__name__} in a condition", node, invalid=True)
        return method(node)

    # ---------------------------------------------------------- boolean

    def or_sql(self, node: ast.Or) -> str:
        return "(" + " OR ".join(self.sql(op) for op in node.operands) + ")"

    def and_sql(self, node: ast.And) -> str:
        return "(" + " AND ".join(self.sql(op) for op in node.operands) + ")"

    def not_sql(self, node: ast.Not) -> str:
        return self.negated(node.operand)

    def negated(self, node: ast.Node) -> str:
        """``not node``, pushed down to the checks (De Morgan), so that only
        single checks are wrapped in coalesce() and the AND/OR above them
        still short-circuit. A missing value makes its check false, so its
        negation true: NOT coalesce(check, false)."""
        if isinstance(node, ast.Not):
            return self.sql(node.operand)
        if isinstance(node, ast.And):
            return "(" + " OR ".join(self.negated(op) for op in node.operands) + ")"
        if isinstance(node, ast.Or):
            return "(" + " AND ".join(self.negated(op) for op in node.operands) + ")"
        return f"(NOT {definite(self.sql(node))})"

    def macroref_sql(self, node: ast.MacroRef) -> str:
        self.unsupported(f"undefined macro '{node.name}' (conditions are compiled after macro expansion)",
                         node, invalid=True)

    # ---------------------------------------------------------- operands

    def field(self, ref: ast.FieldRef) -> ResolvedField:
        try:
            resolved = self.catalog.resolve(ref.name, ref.arg)
        except FieldError as exc:
            self.unsupported(str(exc), ref, ref.name, invalid=True)
        if resolved.sql is None:
            self.unsupported(resolved.spec.unsupported or "unsupported", ref, resolved.display)
        return resolved

    def fieldref_sql(self, ref: ast.FieldRef) -> Operand:
        f = self.field(ref)
        return Operand(_operand(f.sql), f.type, f.display, f.is_list, f.any_element,
                       f.sides if f.arg is None else ())

    def transformer_sql(self, node: ast.Transformer) -> Operand:
        args = [self._transformer_arg(a, node) for a in node.args]
        name = node.name
        display = f"{name}(...)"
        if name in ("tolower", "toupper", "b64", "basename", "len"):
            if len(args) != 1:
                self.unsupported(f"{name}() takes one argument", node, invalid=True)
            arg = args[0]
            if name == "len":
                sql = f"len({arg.sql})" if arg.is_list else f"strlen({arg.sql})"
                return Operand(sql, T.INT, display)
            if arg.type is not T.STRING or arg.is_list:
                self.unsupported(f"{name}() applies to string fields only", node, arg.display, invalid=True)
            sql = {
                "tolower": f"_ascii_lower({arg.sql})",
                "toupper": f"_ascii_upper({arg.sql})",
                "b64": f"try(decode(from_base64({arg.sql})))",
                "basename": f"regexp_extract({arg.sql}, '[^/]*$')",
            }[name]
            return Operand(sql, T.STRING, display)
        if name == "concat":
            # libsinsp: at least two string arguments; missing if any part is
            if len(args) < 2 or any(a.type is not T.STRING or a.is_list for a in args):
                self.unsupported("concat() takes two or more string arguments", node, invalid=True)
            return Operand("(" + " || ".join(a.sql for a in args) + ")", T.STRING, display)
        if name == "join":
            # libsinsp: join(separator, list)
            if len(args) != 2 or args[0].is_list or not args[1].is_list:
                self.unsupported("join() takes a separator and a list", node, invalid=True)
            sep, items = args
            return Operand(f"array_to_string({items.sql}, {sep.sql})", T.STRING, display)
        self.unsupported(f"the {name}() transformer is not implemented", node, display)

    def _transformer_arg(self, arg: ast.Node, parent: ast.Transformer) -> Operand:
        if isinstance(arg, ast.Literal):
            try:
                return Operand(sql_string(arg.value), T.STRING, arg.raw)
            except FieldError as exc:
                self.unsupported(str(exc), arg, parent.name, invalid=True)
        if isinstance(arg, ast.ArgList):
            items = [self._transformer_arg(a, parent) for a in arg.items]
            return Operand("list_value(" + ", ".join(f"CAST({i.sql} AS VARCHAR)" for i in items) + ")",
                           T.STRING, "(...)", is_list=True)
        operand = self.sql(arg)
        if operand.any_element or operand.sides:
            self.unsupported("this field cannot be transformed (EPF_NO_TRANSFORMER)", arg, operand.display,
                             invalid=True)
        return operand

    # ---------------------------------------------------------- checks

    def comparison_sql(self, node: ast.Comparison) -> str:
        left = self.sql(node.left)
        if node.modifier is not None:
            return self._modified(node, left)
        return self._check(node, left, node.op, node.right)

    def _modified(self, node: ast.Comparison, left: Operand) -> str:
        """``f op anyof|allof|oneof (v1, v2)``: the plain operator per value."""
        if not isinstance(node.right, ast.ListLiteral):
            self.unsupported(f"'{node.modifier}' needs a list of values", node, invalid=True)
        checks = [definite(self._check(node, left, node.op, item)) for item in node.right.items]
        if not checks:
            return "false" if node.modifier != "allof" else "true"
        if node.modifier == "anyof":
            return "(" + " OR ".join(checks) + ")"
        if node.modifier == "allof":
            return "(" + " AND ".join(checks) + ")"
        return "((" + " + ".join(f"{c}::INTEGER" for c in checks) + ") = 1)"

    def _check(self, node: ast.Comparison, left: Operand, op: str, right: ast.Node | None) -> str:
        allowed = _LIST_OPS if left.is_list else ALLOWED_OPS[left.type]
        if left.sides:
            allowed = tuple(o for o in allowed if o in _SIDES_OPS)
        if op not in allowed:
            kind = "list" if left.is_list else left.type.value
            self.unsupported(f"operator '{op}' is not supported for {kind} fields", node, left.display,
                             invalid=True)
        if op == "exists":
            return self._exists(left)
        if isinstance(right, (ast.FieldValue, ast.Transformer)):
            return self._field_comparison(node, left, op, right)
        if isinstance(right, ast.ListName):
            self.unsupported(f"undefined list '{right.name}'", right, invalid=True)
        items = right.items if isinstance(right, ast.ListLiteral) else (right,)
        if op not in ("in", "intersects", "pmatch") and len(items) != 1:
            self.unsupported(f"operator '{op}' takes one value, not a list", node, left.display, invalid=True)
        texts = [i.value for i in items]
        if left.any_element and op in ("=", "==", "in", "intersects") and left.type in (T.STRING, *NUMERIC):
            return self._any_element_in(node, left, texts)
        predicate = self._predicate(node, left, op, texts)
        return self._quantify(left, op, predicate)

    def _any_element_in(self, node: ast.Comparison, left: Operand, texts: list[str]) -> str:
        """Some ancestor equals one of the values: list_has_any, no lambda
        per row (NULL elements match nothing, as `_e IN (...)` would)."""
        try:
            if left.type is T.STRING:
                literals = [sql_string(t) for t in texts]
            else:
                parse = values.double if left.type is T.DOUBLE else values.number
                literals = [repr(parse(t)) for t in texts]
        except ValueError as exc:
            self.unsupported(str(exc), node, left.display, invalid=True)
        if not literals:
            return "false"
        return f"list_has_any({left.sql}, [{', '.join(literals)}])"

    def _exists(self, left: Operand) -> str:
        if left.sides:
            return "(" + " OR ".join(f"{s} IS NOT NULL" for s in left.sides) + ")"
        if left.any_element:
            return f"(len(list_filter({left.sql}, lambda _e: _e IS NOT NULL)) > 0)"
        if left.is_list:
            return f"(len({left.sql}) > 0)"
        return f"({left.sql} IS NOT NULL)"

    def _quantify(self, left: Operand, op: str, predicate: Predicate) -> str:
        if left.sides:
            joiner = " AND " if op == "!=" else " OR "
            return "(" + joiner.join(predicate(s) for s in left.sides) + ")"
        if left.any_element:
            return f"(len(list_filter({left.sql}, lambda _e: {predicate('_e')})) > 0)"
        if left.is_list:
            if op == "intersects":
                return f"(len(list_filter({left.sql}, lambda _e: {predicate('_e')})) > 0)"
            return (f"(len({left.sql}) > 0 AND len(list_filter({left.sql}, "
                    f"lambda _e: NOT {definite(predicate('_e'))})) = 0)")
        return predicate(left.sql)

    # ------------------------------------------------- constant right side

    def _predicate(self, node: ast.Comparison, left: Operand, op: str, texts: list[str]) -> Predicate:
        try:
            if left.type is T.STRING:
                return self._string_predicate(op, texts)
            if left.type is T.BUFFER:
                return self._buffer_predicate(op, texts)
            if left.type is T.IPADDR:
                return self._ip_predicate(op, texts)
            if left.type is T.IPNET:
                networks = [values.ip_network(t) for t in texts]
                inside: Predicate = lambda x: "(" + (" OR ".join(_in_network(x, n) for n in networks) or "false") + ")"
                return (lambda x: f"(NOT {inside(x)})") if op == "!=" else inside
            if left.type is T.BOOL:
                return self._set_predicate(op, ["true" if values.boolean(t) else "false" for t in texts])
            parse = values.double if left.type is T.DOUBLE else values.number
            return self._set_predicate(op, [repr(parse(t)) for t in texts])
        except ValueError as exc:
            self.unsupported(str(exc), node, left.display, invalid=True)

    def _set_predicate(self, op: str, sql_values: list[str]) -> Predicate:
        """Comparison against constants already rendered as SQL."""
        if op in ("in", "intersects"):
            if not sql_values:
                return lambda x: "false"
            return lambda x: f"({x} IN ({', '.join(sql_values)}))"
        (value,) = sql_values
        return lambda x: f"({x} {_SQL_OPS[op]} {value})"

    @staticmethod
    def _ip_predicate(op: str, texts: list[str]) -> Predicate:
        """IPv4 addresses compare as canonical dotted quads (the events
        view's form, one spelling per address); IPv6 ones by value, since
        '::ffff:1.2.3.4' has several spellings."""
        addresses = [values.ip_address(t) for t in texts]
        v4 = ", ".join(sql_string(str(a)) for a in addresses if a.version == 4)
        v6 = ", ".join(f"{int(a)}::UHUGEINT" for a in addresses if a.version == 6)

        def member(x: str) -> str:
            parts = ([f"{x} IN ({v4})"] if v4 else []) + ([f"(contains({x}, ':') AND _ip6_num({x}) IN ({v6}))"] if v6 else [])
            return "(" + (" OR ".join(parts) or "false") + ")"

        if op == "!=":
            return lambda x: f"(NOT {member(x)})"
        return member

    def _string_predicate(self, op: str, texts: list[str]) -> Predicate:
        if op in ("=", "==", "!=", "<", "<=", ">", ">=", "in", "intersects"):
            return self._set_predicate(op, [sql_string(t) for t in texts])
        if op == "pmatch":
            prefixes = [sql_string(values.path_prefix(t)) for t in texts]
            return lambda x: "(" + (" OR ".join(f"starts_with(_path_norm({x}), {p})" for p in prefixes) or "false") + ")"
        (text,) = texts
        # Every literal is quoted here, eagerly, so a bad one fails inside
        # _predicate's error handling rather than later in a lambda.
        if op in ("contains", "startswith", "endswith"):
            quoted = sql_string(text)
            fn = {"contains": "contains", "startswith": "starts_with", "endswith": "ends_with"}[op]
            return lambda x: f"{fn}({x}, {quoted})"
        if op == "icontains":
            folded = sql_string(values.ascii_lower(text))
            return lambda x: f"contains(_ascii_lower({x}), {folded})"
        if op in ("glob", "iglob"):
            pattern = values.ascii_lower(text) if op == "iglob" else text
            value = (lambda x: f"_ascii_lower({x})") if op == "iglob" else (lambda x: x)
            like = values.glob_to_like(pattern)
            if like is not None:
                quoted_like = sql_string(like)
                return lambda x: f"({value(x)} LIKE {quoted_like})"
            regex = sql_string(values.glob_to_regex(pattern))
            return lambda x: f"regexp_full_match({value(x)}, {regex})"
        if op == "regex":
            _check_regex(text)
            regex = sql_string(text)
            return lambda x: f"regexp_full_match({x}, {regex})"
        raise AssertionError(op)

    def _buffer_predicate(self, op: str, texts: list[str]) -> Predicate:
        if op in ("bcontains", "bstartswith"):
            (text,) = texts
            needle = values.hex_bytes(text)
            if op == "bstartswith":
                prefix = sql_string(needle)
                return lambda x: f"starts_with(hex({x}), {prefix})"
            # whole bytes only: the match must start at an even hex offset
            pattern = sql_string("^(..)*?" + needle)
            return lambda x: f"regexp_matches(hex({x}), {pattern})"
        if op in ("=", "==", "!=", "in", "intersects"):
            return self._set_predicate(op, [f"{sql_string(t)}::BLOB" for t in texts])
        (text,) = texts
        needle = text.encode().hex().upper()
        if op == "startswith":
            prefix = sql_string(needle)
            return lambda x: f"starts_with(hex({x}), {prefix})"
        pattern = sql_string("^(..)*?" + needle + ("$" if op == "endswith" else ""))
        return lambda x: f"regexp_matches(hex({x}), {pattern})"

    # ---------------------------------------------- val(field) right side

    def _field_comparison(self, node: ast.Comparison, left: Operand, op: str, right: ast.Node) -> str:
        other = self.sql(right.field if isinstance(right, ast.FieldValue) else right)
        if other.is_list or other.any_element or other.sides:
            self.unsupported("val() and transformers on the right must yield one value", right, other.display,
                             invalid=True)
        if _family(other.type) != _family(left.type):
            self.unsupported(f"cannot compare a {left.type.value} field with a {other.type.value} value", right,
                             other.display, invalid=True)
        r = other.sql
        if op in ("=", "==", "!=", "<", "<=", ">", ">="):
            predicate: Predicate = lambda x: f"({x} {_SQL_OPS[op]} {r})"
        elif op in ("in", "intersects"):
            predicate = lambda x: f"({x} = {r})"
        elif op == "contains":
            predicate = lambda x: f"contains({x}, {r})"
        elif op == "icontains":
            predicate = lambda x: f"contains(_ascii_lower({x}), _ascii_lower({r}))"
        elif op == "startswith":
            predicate = lambda x: f"starts_with({x}, {r})"
        elif op == "endswith":
            predicate = lambda x: f"ends_with({x}, {r})"
        else:
            self.unsupported(f"operator '{op}' against a field value is not implemented", node, left.display)
        return self._quantify(left, op, predicate)


def _in_network(x: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """Whether the address text ``x`` lies in ``network``: false (not NULL)
    for an address of the other family, NULL for a missing one. IPv4 works
    on the canonical dotted quad: the whole octets of the prefix as a text
    prefix, then at most one octet range; IPv6 compares numbers."""
    if network.version == 6:
        lo, hi = int(network.network_address), int(network.broadcast_address)
        return f"(contains({x}, ':') AND _ip6_num({x}) BETWEEN {lo}::UHUGEINT AND {hi}::UHUGEINT)"
    octets = str(network.network_address).split(".")
    whole, rest = divmod(network.prefixlen, 8)
    if whole == 4:
        return f"({x} = {sql_string(str(network.network_address))})"
    checks = [f"NOT contains({x}, ':')"]
    if whole:
        checks.append(f"starts_with({x}, {sql_string('.'.join(octets[:whole]) + '.')})")
    if rest:
        low = int(octets[whole])
        checks.append(f"TRY_CAST(split_part({x}, '.', {whole + 1}) AS INTEGER) BETWEEN {low} AND {low + 2 ** (8 - rest) - 1}")
    return "(" + " AND ".join(checks) + ")"


def _family(type_: FieldType) -> str:
    """Types that compare with each other: numbers, addresses, or themselves."""
    if type_ in NUMERIC:
        return "number"
    if type_ in (T.IPADDR, T.IPNET):
        return "ip"
    return type_.value


def definite(sql: str) -> str:
    """NULL (a missing value) becomes false."""
    return f"coalesce({sql}, false)"


_IDENTIFIER = re.compile(r'"[^"]*"')


def _operand(sql: str) -> str:
    """A catalog expression made safe to compare: `"evt.rawres" < 0 = true`
    would be a chained comparison, `("evt.rawres" < 0) = true` is not."""
    return sql if _IDENTIFIER.fullmatch(sql) else f"({sql})"


_regex_checker = None


def _check_regex(pattern: str) -> None:
    """RE2 rejects some patterns Python accepts and the reverse: ask DuckDB."""
    global _regex_checker
    import duckdb

    if _regex_checker is None:
        _regex_checker = duckdb.connect()
    try:
        _regex_checker.execute("SELECT regexp_full_match('', ?)", [pattern]).fetchall()
    except duckdb.Error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
