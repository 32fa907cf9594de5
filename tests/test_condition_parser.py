"""The condition parser against libsinsp's grammar: golden cases, located
errors, a round-trip property (AST -> canonical text -> AST) and fuzzing."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, strategies as st

from analyzer.condition import ast
from analyzer.condition.errors import ConditionError
from analyzer.condition.evttypes import EvtTypes, evttypes
from analyzer.condition.parser import parse
from analyzer.condition.render import BARE_VALUE

# (condition, canonical text of its AST)
GOLDEN = [
    ("a", "a"),
    ("not a", "not a"),
    ("not not a", "a"),
    ("not not not a", "not a"),
    ("not(a)", "not a"),
    ("not(a)and(b)", "not a and b"),
    ("a or(b)", "a or b"),
    ("a and b or c and not d", "a and b or c and not d"),
    ("a and (b or c)", "a and (b or c)"),
    ("(a and b) and c", "(a and b) and c"),
    ("not (a and b)", "not (a and b)"),
    ("not (not a)", "not (not a)"),
    ("  a\n and\tb  ", "a and b"),
    ("proc.name=bash", "proc.name = bash"),
    ("proc.name==bash", "proc.name == bash"),
    ("proc.name!=bash", "proc.name != bash"),
    ("evt.dir=<", "evt.dir = <"),
    ("fd.typechar='f'", 'fd.typechar = "f"'),
    ("fd.num>=0", "fd.num >= 0"),
    ("evt.rawres < -1", "evt.rawres < -1"),
    ("evt.arg.flags contains O_TRUNC", "evt.arg.flags contains O_TRUNC"),
    ("fd.name icontains .SSH", "fd.name icontains .SSH"),
    ("evt.buffer bcontains CAFEBABE", "evt.buffer bcontains CAFEBABE"),
    ("fd.name startswith /etc and fd.name endswith .conf", "fd.name startswith /etc and fd.name endswith .conf"),
    ("evt.buffer bstartswith 7f454c46", "evt.buffer bstartswith 7f454c46"),
    ('fd.name glob "/home/*/.ssh/*"', 'fd.name glob "/home/*/.ssh/*"'),
    ("fd.name iglob /ETC/*", "fd.name iglob /ETC/*"),
    ('proc.cmdline regex "^sh -c .*"', 'proc.cmdline regex "^sh -c .*"'),
    ("evt.type in (open, openat,openat2)", "evt.type in (open, openat, openat2)"),
    ("evt.type in(open)", "evt.type in (open)"),
    ("proc.name in ()", "proc.name in ()"),
    ("proc.name in ( )", "proc.name in ()"),
    ('proc.name in ("a b", \'c\')', 'proc.name in ("a b", "c")'),
    ("proc.args intersects (-c, -i)", "proc.args intersects (-c, -i)"),
    ("fd.name pmatch (/etc, /usr/bin)", "fd.name pmatch (/etc, /usr/bin)"),
    ("proc.name in shell_binaries", "proc.name in shell_binaries"),
    ("k8s.pod.name exists", "k8s.pod.name exists"),
    ("proc.aname[2]=bash", "proc.aname[2] = bash"),
    ("evt.arg[0] = 3", "evt.arg[0] = 3"),
    ("container.mount.dest[/proc*] exists", "container.mount.dest[/proc*] exists"),
    ('container.label["app name"] = x', 'container.label["app name"] = x'),
    ("fd.sport = 0x1F", "fd.sport = 0x1F"),
    ("fd.sport > 0x1F", "fd.sport > 0x1F"),
    ("evt.num > 1.5e+10", "evt.num > 1.5e+10"),
    ("tolower(proc.name) = bash", "tolower(proc.name) = bash"),
    ("toupper( proc.name )=BASH", "toupper(proc.name) = BASH"),
    ("basename(proc.exepath) = val(proc.name)", "basename(proc.exepath) = val(proc.name)"),
    ("b64(evt.arg.data) contains x", "b64(evt.arg.data) contains x"),
    ("len(proc.args) > 2", "len(proc.args) > 2"),
    ("tolower(toupper(proc.name)) = x", "tolower(toupper(proc.name)) = x"),
    ('join(", ", proc.args) = "a, b"', 'join(", ", proc.args) = "a, b"'),
    ('concat(proc.name, "-", proc.pid) startswith bash', 'concat(proc.name, "-", proc.pid) startswith bash'),
    ('getopt(proc.args, "c") = x', 'getopt(proc.args, "c") = x'),
    ("concat(proc.name, (proc.pid, 1)) = x", "concat(proc.name, (proc.pid, 1)) = x"),
    ("proc.name = tolower(proc.pname)", "proc.name = tolower(proc.pname)"),
    ("proc.pid < val(proc.ppid)", "proc.pid < val(proc.ppid)"),
    ("proc.name in val(proc.pname)", "proc.name in val(proc.pname)"),
    ('proc.cmdline startswith oneof ("a b", c)', 'proc.cmdline startswith oneof ("a b", c)'),
    ("proc.cmdline contains anyof (x)", "proc.cmdline contains anyof (x)"),
    ("proc.cmdline endswith allof(x,y)", "proc.cmdline endswith allof (x, y)"),
    ("proc.name = anyof", "proc.name = anyof"),
    ("proc.name = oneof and a", "proc.name = oneof and a"),
    (r'proc.name = "a\"b\\c\/d\te\x41"', r'proc.name = "a\"b\\c/d\teA"'),
    (r"proc.name = 'it\'s'", "proc.name = \"it's\""),
    (r'proc.name = "x\x5c"', r'proc.name = "x\x5c"'),
    ("notx and orx", "notx and orx"),
]


@pytest.mark.parametrize("condition,canonical", GOLDEN)
def test_golden(condition, canonical):
    expr = parse(condition)
    assert expr.text() == canonical
    assert parse(canonical).shape() == expr.shape()


def test_precedence_and_nary_shapes():
    expr = parse("a or b and not c and d or e")
    assert isinstance(expr, ast.Or) and len(expr.operands) == 3
    middle = expr.operands[1]
    assert isinstance(middle, ast.And) and len(middle.operands) == 3
    assert middle.operands[1] == ast.Not(ast.MacroRef("c", ast.Span(15, 16)), ast.Span(11, 16))


def test_values_keep_raw_text_and_quoting():
    expr = parse("proc.name in ('a b', c, \"d\") and fd.sport = 0x10")
    items = expr.operands[0].right.items
    assert [(i.value, i.raw, i.quoted) for i in items] == [("a b", "'a b'", True), ("c", "c", False), ("d", '"d"', True)]
    number = expr.operands[1].right
    assert (number.value, number.quoted) == ("0x10", False)


def test_field_arguments_and_spans():
    condition = "x and proc.aname[3] = init"
    check = parse(condition).operands[1]
    assert check.left == ast.FieldRef("proc.aname", "3", ast.Span(6, 19))
    assert condition[check.span.start:check.span.end] == "proc.aname[3] = init"
    assert condition[check.right.span.start:check.right.span.end] == "init"


ERRORS = [
    ("", "filter input string is empty", 0),
    ("a or", "expected blank or '(' after 'or'", 4),
    ("a andb", "expected blank or '(' after 'and'", 5),
    ("(a", "expected a ')' token", 2),
    ("a b", "unexpected token after 'a', expecting 'or', 'and'", 2),
    ("proc.name", "expected a valid check operator", 9),
    ("proc.name globx", "expected a blank after operator 'glob'", 14),
    ("proc.name = ", "expected a string value or a field with a valid transformer", 12),
    ("proc.name < abc", "expected a number value", 12),
    ("proc.name in (a,", "expected a string value", 16),
    ("proc.name in (a b)", "expected a ')' token", 16),
    ("proc.name[", "expected a valid field argument", 10),
    ("proc.name[x", "expected a ']' token", 11),
    ('proc.name = "abc', "expected a string value", 12),
    # libsinsp ends a quoted string only at a delimiter not preceded by "\"
    ('proc.name = "x\\\\"', "expected a string value", 12),
    (r'proc.name = "a\q"', r"unsupported string escape sequence: \q", 14),
    (r"proc.name = 'a\"'", "invalid \\\" escape in '-quoted string", 14),
    (r'proc.name = "\xZZ"', "invalid \\x escape", 13),
    ("tolower(x) = a", "expected field transformer argument", 8),
    ("tolower(proc.name = a", "expected a ')' token closing the transformer", 18),
    ("proc.name = val(x)", "expected a field within 'val' transformer", 16),
    ("= a", "expected a '(' token, a field check, or an identifier", 0),
]


@pytest.mark.parametrize("condition,message,offset", ERRORS)
def test_errors_are_located(condition, message, offset):
    with pytest.raises(ConditionError) as info:
        parse(condition)
    assert info.value.message.startswith(message)
    assert info.value.offset == offset
    assert "^" in str(info.value)


def test_error_line_and_column_in_multiline_condition():
    with pytest.raises(ConditionError) as info:
        parse("a and\n  b and\n  proc.name =")
    assert info.value.line_col() == (3, 14)


def test_deep_nesting_is_a_located_error_not_a_crash():
    parse("(" * 50 + "a" + ")" * 50)
    with pytest.raises(ConditionError, match="nested deeper"):
        parse("(" * 5000 + "a" + ")" * 5000)
    with pytest.raises(ConditionError):
        parse("tolower(" * 3000 + "proc.name" + ")" * 3000 + " = x")


# ------------------------------------------------------------------ evt.type


@pytest.mark.parametrize("condition,expected", [
    ("evt.type = open", EvtTypes(frozenset({"open"}))),
    ("evt.type in (open, openat) and proc.name = x", EvtTypes(frozenset({"open", "openat"}))),
    ("evt.type = open or evt.type = close", EvtTypes(frozenset({"open", "close"}))),
    ("evt.type = open or proc.name = x", EvtTypes.all()),
    ("evt.type != open", EvtTypes(frozenset({"open"}), True)),
    ("not evt.type = open", EvtTypes(frozenset({"open"}), True)),
    ("not evt.type != open", EvtTypes(frozenset({"open"}))),
    ("not (evt.type = open or evt.type = close)", EvtTypes(frozenset({"open", "close"}), True)),
    ("not (evt.type in (open, close) and proc.name = x)", EvtTypes.all()),
    ("evt.type in (open, close) and not evt.type = close", EvtTypes(frozenset({"open"}))),
    ("evt.type = open and evt.type = close", EvtTypes(frozenset())),
    ("not proc.name = x", EvtTypes.all()),
    ("evt.type startswith open", EvtTypes.all()),
    ("not evt.type exists", EvtTypes(frozenset())),
    ("proc.name = x", EvtTypes.all()),
])
def test_evttypes_as_libsinsp_computes_them(condition, expected):
    assert evttypes(parse(condition)) == expected


def test_falco_evttype_warning_threshold():
    assert EvtTypes.all().too_many()
    assert EvtTypes(frozenset()).too_many()
    assert not EvtTypes(frozenset({"open"})).too_many()
    assert EvtTypes(frozenset(f"t{i}" for i in range(51))).too_many()


# ------------------------------------------------------------------ properties

FIELDS = ["proc.name", "fd.name", "evt.type", "proc.cmdline", "fd.sport", "container.id", "evt.arg.flags"]
ARG_FIELDS = ["proc.aname", "evt.arg", "container.mount.dest"]
HOSTILE = st.text(
    alphabet=st.sampled_from(list("ab /*?%_'\"\\()=,[]\t\n") + ["é", "\u2028", "x"]), min_size=0, max_size=12
)
identifiers = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_]{0,8}", fullmatch=True).filter(
    lambda s: s not in ("not", "and", "or") and not s.startswith(tuple(ast.TRANSFORMERS) + ("val",))
)
bare = st.from_regex(r"[a-zA-Z0-9/._*+-]{1,10}", fullmatch=True).filter(lambda s: bool(BARE_VALUE.fullmatch(s)))
literals = st.one_of(
    bare.map(lambda v: ast.Literal(v)),
    HOSTILE.map(lambda v: ast.Literal(v, quoted=True)),
)
numbers = st.one_of(
    st.integers(-10**12, 10**12).map(str),
    st.integers(0, 2**32).map(lambda n: hex(n)),
).map(lambda v: ast.Literal(v))


@st.composite
def field_refs(draw):
    if draw(st.booleans()):
        return ast.FieldRef(draw(st.sampled_from(FIELDS)))
    arg = draw(st.one_of(st.from_regex(r"[0-9]{1,2}", fullmatch=True), HOSTILE.filter(bool)))
    return ast.FieldRef(draw(st.sampled_from(ARG_FIELDS)), arg)


@st.composite
def operands(draw):
    field = draw(field_refs())
    if draw(st.integers(0, 4)) == 0:
        name = draw(st.sampled_from(["tolower", "toupper", "b64", "basename", "len"]))
        return ast.Transformer(name, (field,))
    return field


@st.composite
def comparisons(draw):
    left = draw(operands())
    kind = draw(st.sampled_from(["str", "num", "list", "exists", "val", "modifier"]))
    if kind == "exists":
        return ast.Comparison(left, "exists")
    if kind == "num":
        return ast.Comparison(left, draw(st.sampled_from(ast.NUMERIC_OPERATORS)), draw(numbers))
    if kind == "list":
        items = tuple(draw(st.lists(literals, max_size=4)))
        return ast.Comparison(left, draw(st.sampled_from(ast.LIST_OPERATORS)), ast.ListLiteral(items))
    if kind == "val":
        return ast.Comparison(left, "=", ast.FieldValue(draw(field_refs())))
    if kind == "modifier":
        items = tuple(draw(st.lists(literals, min_size=1, max_size=3)))
        op = draw(st.sampled_from(ast.STRING_OPERATORS))
        return ast.Comparison(left, op, ast.ListLiteral(items), draw(st.sampled_from(ast.MODIFIERS)))
    return ast.Comparison(left, draw(st.sampled_from(ast.STRING_OPERATORS)), draw(literals))


expressions = st.recursive(
    st.one_of(comparisons(), identifiers.map(ast.MacroRef)),
    lambda children: st.one_of(
        children.map(ast.Not),
        st.lists(children, min_size=2, max_size=3).map(lambda c: ast.And(tuple(c))),
        st.lists(children, min_size=2, max_size=3).map(lambda c: ast.Or(tuple(c))),
    ),
    max_leaves=12,
)


@given(expressions)
def test_round_trip_ast_text_ast(expr):
    text = expr.text()
    reparsed = parse(text)
    assert reparsed.shape() == expr.shape(), text
    assert reparsed.text() == text


GRAMMAR_SOUP = st.lists(
    st.sampled_from([
        " ", "\t", "\n", "(", ")", ",", "=", "==", "!=", "<", ">=", "not ", "not(", " and ", " or ", "and", "or",
        "proc.name", "evt.type", "proc.aname[", "]", "[", '"', "'", "\\", "\\x4", "in", " in ", "contains ",
        "exists", "glob ", "tolower(", "val(", "join(", "oneof ", "a", "b1", "0x1F", "-3", "/etc/*", "é", "\x00",
    ]),
    max_size=25,
).map("".join)


@given(st.one_of(GRAMMAR_SOUP, st.text(max_size=40), st.text(alphabet=string.printable, max_size=40)))
def test_fuzz_parser_raises_only_located_errors(text):
    try:
        expr = parse(text)
    except ConditionError as exc:
        assert 0 <= exc.offset <= len(text)
        str(exc)
        return
    # whatever parses re-parses to the same tree from its canonical text
    assert parse(expr.text()).shape() == expr.shape()
