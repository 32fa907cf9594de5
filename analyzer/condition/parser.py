"""Recursive-descent parser for Falco conditions, mirroring libsinsp's
filter/parser.cpp production by production:

    Expr        ::= OrExpr
    OrExpr      ::= AndExpr ('or' (blank AndExpr | '(' Expr ')'))*
    AndExpr     ::= NotExpr ('and' (blank NotExpr | '(' Expr ')'))*
    NotExpr     ::= ('not' blank)* ('not(' Expr ')' | Check)
    Check       ::= '(' Expr ')' | Field Condition | Transformer Condition | Identifier
    Condition   ::= 'exists'
                  | NumOp (Number | TransformerOrVal)
                  | StrOp (Modifier ListValue | TransformerOrVal | StrValue)
                  | ListOp ('(' StrValue (',' StrValue)* ')' | '()' | TransformerOrVal | Identifier)

Where libsinsp's lexer would silently go on after an operator that lacks its
mandatory trailing blank (``globin (a)`` lexes as ``in (a)``), this parser
reports the missing blank instead.

The only exception ``parse`` raises is ConditionError, located in the text.
"""

from __future__ import annotations

from analyzer.condition import ast
from analyzer.condition.errors import ConditionError
from analyzer.condition.tokens import (
    BARE_STRING, FIELD_ARG_BARE, FIELD_NAME, HEX_NUMBER, IDENTIFIER, NOT_BLANK, NUMBER, Scanner, Token,
)

STRING_OPS_NEEDING_BLANK = tuple(op for op in ast.STRING_OPERATORS if op.isalpha())
# Longest first where one operator prefixes another.
_NUM_OPS = ("<=", "<", ">=", ">")
_STR_OPS = ("==", "=", "!=") + STRING_OPS_NEEDING_BLANK
_TRANSFORMER_OPENERS = tuple(f"{name}(" for name in ast.TRANSFORMERS)
MAX_NESTING = 100


def parse(condition: str) -> ast.Expr:
    """Parse one condition (a rule's or a macro's) into an AST."""
    if not isinstance(condition, str):
        raise ConditionError("condition must be a string", "", 0)
    if condition == "":
        raise ConditionError("filter input string is empty", condition, 0)
    parser = _Parser(condition)
    try:
        expr = parser.parse_or()
    except RecursionError:
        raise ConditionError("condition nested too deeply", condition, 0) from None
    if not parser.scan.at_end:
        raise parser.scan.error(f"unexpected token after '{parser.scan.last}', expecting 'or', 'and'")
    return expr


def parse_list(text: str) -> ast.ListLiteral:
    """Parse ``(v1, v2, ...)`` exactly as it would parse after a list
    operator (how Falco's pasted list items are read)."""
    parser = _Parser(text)
    parser.scan.blank()
    start = parser.scan.pos
    if not parser.scan.literal("("):
        raise parser.scan.error("expected a '(' token")
    literal = parser.parse_list_literal(start)
    parser.scan.blank()
    if not parser.scan.at_end:
        raise parser.scan.error(f"unexpected text after the list: '{text[parser.scan.pos:]}'")
    return literal


class _Parser:
    def __init__(self, text: str) -> None:
        self.scan = Scanner(text)
        self.depth = 0

    # ------------------------------------------------------------ boolean

    def parse_or(self) -> ast.Expr:
        scan = self.scan
        scan.blank()
        children = [self.parse_and()]
        scan.blank()
        while scan.literal("or"):
            children.append(self._after_keyword("or", self.parse_and))
            scan.blank()
        return children[0] if len(children) == 1 else ast.Or(tuple(children), _cover(children))

    def parse_and(self) -> ast.Expr:
        scan = self.scan
        scan.blank()
        children = [self.parse_not()]
        scan.blank()
        while scan.literal("and"):
            children.append(self._after_keyword("and", self.parse_not))
            scan.blank()
        return children[0] if len(children) == 1 else ast.And(tuple(children), _cover(children))

    def _after_keyword(self, keyword: str, parse_next) -> ast.Expr:
        scan = self.scan
        if scan.blank():
            return parse_next()
        if scan.literal("("):
            return self.parse_embedded_remainder(scan.pos - 1)
        raise scan.error(f"expected blank or '(' after '{keyword}'")

    def parse_not(self) -> ast.Expr:
        scan = self.scan
        scan.blank()
        start = scan.pos
        negate = False
        while scan.regex(NOT_BLANK):
            negate = not negate
        if scan.literal("not("):
            negate = not negate
            child = self.parse_embedded_remainder(scan.pos - 1)
        else:
            child = self.parse_check()
        if not negate:
            return child
        return ast.Not(child, ast.Span(start, max(child.span.end, start)))

    def parse_embedded_remainder(self, open_at: int) -> ast.Expr:
        """The rest of ``( Expr )`` after the opening parenthesis."""
        scan = self.scan
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise scan.error(f"condition nested deeper than {MAX_NESTING} parentheses", open_at)
        scan.blank()
        child = self.parse_or()
        scan.blank()
        if not scan.literal(")"):
            raise scan.error("expected a ')' token")
        self.depth -= 1
        return child

    # ------------------------------------------------------------ checks

    def parse_check(self) -> ast.Expr:
        scan = self.scan
        scan.blank()
        start = scan.pos
        if scan.literal("("):
            return self.parse_embedded_remainder(start)
        name = scan.regex(FIELD_NAME)
        if name:
            left: ast.Operand = self.parse_field_remainder(name)
            return self.parse_condition(left, start)
        opener = scan.one_of(_TRANSFORMER_OPENERS)
        if opener:
            scan.blank()
            left = self.parse_transformer_remainder(opener)
            return self.parse_condition(left, start)
        identifier = scan.regex(IDENTIFIER)
        if identifier:
            return ast.MacroRef(identifier.text, identifier.span)
        raise scan.error("expected a '(' token, a field check, or an identifier")

    def parse_field_remainder(self, name: Token) -> ast.FieldRef:
        scan = self.scan
        if not scan.literal("["):
            return ast.FieldRef(name.text, None, name.span)
        arg = scan.quoted() or scan.regex(FIELD_ARG_BARE)
        if arg is None:
            raise scan.error("expected a valid field argument: a quoted string or a bare string")
        if not scan.literal("]"):
            raise scan.error("expected a ']' token")
        return ast.FieldRef(name.text, arg.value, ast.Span(name.span.start, scan.pos))

    def parse_transformer_remainder(self, opener: Token) -> ast.Transformer:
        """Arguments and ')' of a transformer whose ``name(`` was consumed."""
        scan = self.scan
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise scan.error(f"transformers nested deeper than {MAX_NESTING}", opener.span.start)
        args = []
        while True:
            scan.blank()
            args.append(self.parse_transformer_arg())
            scan.blank()
            if not scan.literal(","):
                break
        scan.blank()
        if not scan.literal(")"):
            raise scan.error("expected a ')' token closing the transformer")
        self.depth -= 1
        return ast.Transformer(opener.text[:-1], tuple(args), ast.Span(opener.span.start, scan.pos))

    def parse_transformer_arg(self) -> ast.TransformerArg:
        scan = self.scan
        number = scan.regex(HEX_NUMBER) or scan.regex(NUMBER)
        if number:
            return ast.Literal(number.value, number.text, False, number.span)
        quoted = scan.quoted()
        if quoted:
            return ast.Literal(quoted.value, quoted.text, True, quoted.span)
        start = scan.pos
        if scan.literal("("):
            return self.parse_arg_list(start)
        opener = scan.one_of(_TRANSFORMER_OPENERS)
        if opener:
            return self.parse_transformer_remainder(opener)
        name = scan.regex(FIELD_NAME)
        if name:
            return self.parse_field_remainder(name)
        raise scan.error(
            "expected field transformer argument: field, transformer, quoted string, number, or transformer list"
        )

    def parse_arg_list(self, start: int) -> ast.ArgList:
        scan = self.scan
        scan.blank()
        items: list[ast.TransformerArg] = []
        if not scan.literal(")"):
            items.append(self.parse_arg_list_item())
            scan.blank()
            while scan.literal(","):
                scan.blank()
                items.append(self.parse_arg_list_item())
                scan.blank()
            if not scan.literal(")"):
                raise scan.error("expected ')'")
        return ast.ArgList(tuple(items), ast.Span(start, scan.pos))

    def parse_arg_list_item(self) -> ast.TransformerArg:
        scan = self.scan
        name = scan.regex(FIELD_NAME)
        if name:
            return self.parse_field_remainder(name)
        opener = scan.one_of(_TRANSFORMER_OPENERS)
        if opener:
            scan.blank()
            return self.parse_transformer_remainder(opener)
        quoted = scan.quoted()
        if quoted:
            return ast.Literal(quoted.value, quoted.text, True, quoted.span)
        number = scan.regex(HEX_NUMBER) or scan.regex(NUMBER)
        if number:
            return ast.Literal(number.value, number.text, False, number.span)
        raise scan.error("expected transformer list argument: field, transformer, quoted string, or number")

    def parse_condition(self, left: ast.Operand, start: int) -> ast.Comparison:
        scan = self.scan
        scan.blank()
        unary = scan.literal("exists")
        if unary:
            return ast.Comparison(left, "exists", None, None, ast.Span(start, scan.pos))
        scan.blank()
        op_at = scan.pos
        modifier = None
        if scan.one_of(_NUM_OPS):
            op = scan.last
            right = self.parse_num_value()
        elif self._operator(_STR_OPS):
            op = scan.last
            modifier = self._modifier()
            right = self.parse_list_literal(scan.pos - 1) if modifier else self.parse_str_value()
        elif self._operator(ast.LIST_OPERATORS):
            op = scan.last
            right = self.parse_list_value()
        else:
            raise scan.error(
                "expected a valid check operator: one of "
                + ", ".join(f"'{o}'" for o in ast.UNARY_OPERATORS + _NUM_OPS + _STR_OPS + ast.LIST_OPERATORS),
                op_at,
            )
        return ast.Comparison(left, op, right, modifier, ast.Span(start, right.span.end))

    def _operator(self, options: tuple[str, ...]) -> bool:
        """An operator; the alphabetic string operators need a blank after them."""
        scan = self.scan
        token = scan.one_of(options)
        if token is None:
            return False
        if token.text in STRING_OPS_NEEDING_BLANK and not scan.blank():
            raise scan.error(f"expected a blank after operator '{token.text}'")
        scan.last = token.text
        return True

    def _modifier(self) -> str | None:
        """``oneof``/``anyof``/``allof`` directly followed by a list. Without
        the list the word is an ordinary bare value, as it always was."""
        scan = self.scan
        saved = scan.pos
        scan.blank()
        word = scan.one_of(ast.MODIFIERS)
        if word:
            scan.blank()
            if scan.literal("("):
                return word.text
        scan.pos = saved
        return None

    # ------------------------------------------------------------ values

    def try_transformer_or_val(self) -> ast.Value | None:
        scan = self.scan
        scan.blank()
        start = scan.pos
        if scan.literal("val("):
            scan.blank()
            name = scan.regex(FIELD_NAME)
            if name is None:
                raise scan.error("expected a field within 'val' transformer")
            field = self.parse_field_remainder(name)
            scan.blank()
            if not scan.literal(")"):
                raise scan.error("expected a ')' token closing the transformer")
            return ast.FieldValue(field, ast.Span(start, scan.pos))
        opener = scan.one_of(_TRANSFORMER_OPENERS)
        if opener:
            scan.blank()
            return self.parse_transformer_remainder(opener)
        return None

    def parse_num_value(self) -> ast.Value:
        scan = self.scan
        value = self.try_transformer_or_val()
        if value is not None:
            return value
        number = scan.regex(HEX_NUMBER) or scan.regex(NUMBER)
        if number:
            return ast.Literal(number.value, number.text, False, number.span)
        raise scan.error("expected a number value or a field with a valid transformer: " + _transformer_names())

    def parse_str_value(self) -> ast.Value:
        value = self.try_transformer_or_val()
        if value is not None:
            return value
        literal = self._plain_str_value()
        if literal is None:
            raise self.scan.error("expected a string value or a field with a valid transformer: " + _transformer_names())
        return literal

    def _plain_str_value(self) -> ast.Literal | None:
        scan = self.scan
        scan.blank()
        token = scan.quoted() or scan.regex(BARE_STRING)
        if token is None:
            return None
        return ast.Literal(token.value, token.text, token.quoted, token.span)

    def parse_list_value(self) -> ast.Value:
        scan = self.scan
        scan.blank()
        start = scan.pos
        if scan.literal("("):
            return self.parse_list_literal(start)
        value = self.try_transformer_or_val()
        if value is not None:
            return value
        identifier = scan.regex(IDENTIFIER)
        if identifier:
            return ast.ListName(identifier.text, identifier.span)
        raise scan.error("expected a list, an identifier, or a field with a valid transformer: " + _transformer_names())

    def parse_list_literal(self, start: int) -> ast.ListLiteral:
        """The rest of ``(v1, v2, ...)`` or ``()`` after the '('."""
        scan = self.scan
        items: list[ast.Literal] = []
        first = self._plain_str_value()
        if first is not None:
            items.append(first)
            scan.blank()
            while scan.literal(","):
                item = self._plain_str_value()
                if item is None:
                    raise scan.error("expected a string value")
                items.append(item)
                scan.blank()
        if not scan.literal(")"):
            raise scan.error("expected a ')' token")
        return ast.ListLiteral(tuple(items), ast.Span(start, scan.pos))


def _cover(children: list[ast.Expr]) -> ast.Span:
    return ast.Span(children[0].span.start, children[-1].span.end)


def _transformer_names() -> str:
    return ", ".join(f"'{name}'" for name in ("val",) + ast.TRANSFORMERS)


__all__ = ["parse", "parse_list", "ConditionError"]
