"""The rules loader: Falco's YAML reading, composition semantics, exceptions,
list substitution, located errors collected in one pass, `trace rules check`."""

from __future__ import annotations

import textwrap

import pytest
from click.testing import CliRunner
from hypothesis import given, strategies as st

from analyzer.cli import main
from analyzer.condition import ast
from analyzer.rules.errors import Severity
from analyzer.rules.loader import Collector, load_rules
from analyzer.rules.model import Priority
from analyzer.rules.ruleset import compile_ruleset

RULE = """
- rule: {name}
  desc: d
  condition: {condition}
  output: o
  priority: {priority}
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def load_text(tmp_path, *pieces, name="rules.yaml"):
    """Load YAML pieces, each dedented on its own, from one file."""
    text = "".join(textwrap.dedent(piece).lstrip("\n") for piece in pieces)
    return load_rules([write(tmp_path, name, text)])


def rule_text(name="r", condition="evt.type = open", priority="WARNING"):
    return RULE.format(name=name, condition=condition, priority=priority)


def errors(ruleset):
    return [f.message for f in ruleset.errors]


def comparisons(rule):
    return list(rule.expr.find_all(ast.Comparison))


# ------------------------------------------------------------------ YAML


def test_yaml_words_falco_keeps_as_strings(tmp_path):
    ruleset = load_text(tmp_path, """
        - list: words
          items: [yes, no, on, off, 22, 0x10, ~x, '"quoted item"', "two words"]
        - rule: r
          desc: d
          condition: evt.type = open and proc.name in (words)
          output: o
          priority: notice
          enabled: no
          exceptions:
            - name: e
              fields: [proc.name, fd.name]
              comps: [=, contains]
              values:
                - [yes, no]
    """)
    assert errors(ruleset) == []
    assert ruleset.lists["words"] == ("yes", "no", "on", "off", "22", "0x10", "~x", '"quoted item"', "two words")
    rule = ruleset.rule("r")
    assert rule.enabled is False
    assert rule.condition.endswith("and not (( proc.name = yes and  fd.name contains no))")
    items = next(c for c in comparisons(rule) if c.op == "in").right.items
    assert [(i.value, i.quoted) for i in items][-2:] == [("quoted item", True), ("two words", True)]


def test_invalid_yaml_is_a_located_error(tmp_path):
    ruleset = load_text(tmp_path, "- rule: r\n  desc: [unclosed\n")
    assert len(ruleset.errors) == 1
    finding = ruleset.errors[0]
    assert finding.message.startswith("invalid YAML") and finding.location.line >= 2


def test_non_list_document_and_non_map_items(tmp_path):
    ruleset = load_text(tmp_path, "- just a string\n" + rule_text())
    assert errors(ruleset) == ["Unexpected element type. Each element should be a yaml associative array."]
    assert [r.name for r in ruleset.rules] == ["r"]
    assert errors(load_text(tmp_path, "rule: r\n", name="map.yaml")) == ["rules content is not yaml array of objects"]


# ------------------------------------------------------------------ composition


def test_later_definition_replaces_earlier_but_keeps_its_place(tmp_path):
    ruleset = load_text(tmp_path, rule_text("a") + rule_text("b") + rule_text("a", "evt.type = close"))
    assert [r.name for r in ruleset.rules] == ["a", "b"]
    assert ruleset.rule("a").evttypes.names == {"close"}


def test_macro_sees_only_earlier_macros_rule_sees_all(tmp_path):
    ruleset = load_text(tmp_path, """
        - macro: uses_later
          condition: later_macro
        - macro: later_macro
          condition: evt.type = open
        - rule: r
          desc: d
          condition: later_macro and defined_after_rule
          output: o
          priority: INFO
        - macro: defined_after_rule
          condition: proc.name = bash
    """)
    assert errors(ruleset) == ["Undefined macro 'later_macro' used in filter."]
    assert ruleset.errors[0].item_name == "uses_later"
    assert ruleset.rule("r").evttypes.names == {"open"}


def test_redefined_macro_sees_macros_defined_before_its_redefinition(tmp_path):
    ruleset = load_text(tmp_path, """
        - macro: m
          condition: evt.type = open
        - macro: helper
          condition: proc.name = bash
        - macro: m
          condition: evt.type = close and helper
    """, rule_text(condition="m"))
    assert errors(ruleset) == []
    assert ruleset.rule("r").expr.text() == "evt.type = close and proc.name = bash"


def test_macro_loop_is_an_error(tmp_path):
    ruleset = load_text(tmp_path, """
        - macro: a
          condition: evt.type = open
        - macro: b
          condition: a
        - macro: a
          condition: b
    """)
    assert any("reference loop" in m or "Undefined macro" in m for m in errors(ruleset))


def test_append_true_on_lists_macros_and_rules(tmp_path):
    ruleset = load_text(tmp_path, """
        - list: shells
          items: [bash]
        - macro: spawned
          condition: evt.type = execve
        - rule: r
          desc: d
          condition: spawned and proc.name in (shells)
          output: o
          priority: ERROR
        - list: shells
          items: [zsh]
          append: true
        - macro: spawned
          condition: or evt.type = execveat
          append: true
        - rule: r
          condition: and proc.pname != init
          append: true
    """)
    assert errors(ruleset) == []
    assert [w.code for w in ruleset.warnings] == ["deprecated-append"] * 3
    assert ruleset.lists["shells"] == ("bash", "zsh")
    rule = ruleset.rule("r")
    assert rule.expr.text() == (
        "(evt.type = execve or evt.type = execveat) and proc.name in (bash, zsh) and proc.pname != init"
    )
    assert rule.evttypes.names == {"execve", "execveat"}


def test_override_append_and_replace(tmp_path):
    ruleset = load_text(tmp_path, rule_text("r", "evt.type = open"), """
        - rule: r
          condition: and proc.name = x
          output: more
          desc: also
          priority: critical
          tags: [t]
          override:
            condition: append
            output: append
            desc: append
            priority: replace
            tags: append
        - rule: r
          enabled: false
          override:
            enabled: replace
    """)
    assert errors(ruleset) == []
    rule = ruleset.rule("r")
    assert rule.condition == "evt.type = open and proc.name = x"
    assert (rule.output, rule.desc, rule.priority, rule.tags, rule.enabled) == (
        "o more", "d also", Priority.CRITICAL, ("t",), False
    )


@pytest.mark.parametrize("item,message", [
    ("- rule: nope\n  condition: x\n  append: true\n", "Rule has 'append' key but no rule by that name already exists"),
    ("- macro: nope\n  condition: x\n  append: true\n", "Macro has 'append' key but no macro by that name already exists"),
    ("- list: nope\n  items: [x]\n  override:\n    items: append\n", "List has 'append' key but no list by that name already exists"),
    ("- rule: nope\n  enabled: true\n", "Rule has 'enabled' key but no rule by that name already exists"),
    ("- rule: r\n  condition: x\n  append: true\n  override:\n    condition: append\n",
     "Keys 'override' and 'append: true' cannot be used together"),
    ("- rule: r\n  priority: INFO\n  override:\n    priority: append\n", "Key 'priority' cannot be overridden with 'append'"),
    ("- rule: r\n  output: x\n  override:\n    condition: append\n",
     "An override key 'condition' was specified but no value was provided"),
    ("- rule: r\n  append: true\n  output: x\n", "Appended rule must have exceptions or condition property"),
])
def test_composition_errors(tmp_path, item, message):
    ruleset = load_text(tmp_path, rule_text("r") + item)
    assert errors(ruleset) == [message]
    assert [r.name for r in ruleset.rules] == ["r"]


def test_enabled_only_item_toggles_existing_rule_across_files(tmp_path):
    first = write(tmp_path, "a.yaml", rule_text("r"))
    second = write(tmp_path, "b.yaml", "- rule: r\n  enabled: false\n- list: l\n  items: [x]\n")
    third = write(tmp_path, "c.yaml", "- list: l\n  items: [y]\n  append: true\n")
    ruleset = load_rules([first, second, third])
    assert errors(ruleset) == []
    assert ruleset.rule("r").enabled is False and ruleset.enabled_rules == []
    assert ruleset.lists["l"] == ("x", "y")


@pytest.mark.parametrize("text,priority", [
    ("emergency", Priority.EMERGENCY), ("Alert", Priority.ALERT), ("CRITICAL", Priority.CRITICAL),
    ("error", Priority.ERROR), ("Warning", Priority.WARNING), ("NOTICE", Priority.NOTICE),
    ("INFO", Priority.INFORMATIONAL), ("informational", Priority.INFORMATIONAL), ("Debug", Priority.DEBUG),
])
def test_priorities_are_case_insensitive(tmp_path, text, priority):
    ruleset = load_text(tmp_path, rule_text(priority=text))
    assert ruleset.rule("r").priority is priority
    assert priority.falco_name in ("Emergency", "Alert", "Critical", "Error", "Warning", "Notice", "Informational", "Debug")


# ------------------------------------------------------------------ exceptions


def test_exceptions_expand_like_falco(tmp_path):
    ruleset = load_text(tmp_path, """
        - list: allowed
          items: [a, "b c"]
        - rule: r
          desc: d
          condition: evt.type = open or evt.type = close
          output: o
          priority: INFO
          exceptions:
            - name: single
              fields: proc.name
              values: [allowed, x y]
            - name: single_pmatch
              fields: fd.name
              comps: pmatch
              values: [/etc]
            - name: tuples
              fields: [proc.name, fd.name]
              comps: [in, startswith]
              values:
                - [allowed, /tmp]
                - [[p, q r], '"/x y"']
            - name: empty
              fields: [proc.name]
    """)
    assert errors(ruleset) == []
    rule = ruleset.rule("r")
    assert rule.condition == (
        "(evt.type = open or evt.type = close)"
        ' and not (proc.name in (allowed, "x y"))'
        " and not (fd.name pmatch (/etc))"
        " and not (( proc.name in (allowed) and  fd.name startswith /tmp)"
        ' or ( proc.name in (p, "q r") and  fd.name startswith "/x y"))'
    )
    assert rule.expr.text() == (
        "(evt.type = open or evt.type = close)"
        ' and not proc.name in (a, "b c", "x y")'
        " and not fd.name pmatch (/etc)"
        " and not (proc.name in (a, \"b c\") and fd.name startswith /tmp"
        ' or proc.name in (p, "q r") and fd.name startswith "/x y")'
    )
    assert rule.exception_fields == {"proc.name", "fd.name"}
    assert rule.evttypes.names == {"open", "close"}


def test_exception_values_append(tmp_path):
    ruleset = load_text(tmp_path, """
        - rule: r
          desc: d
          condition: evt.type = open
          output: o
          priority: INFO
          exceptions:
            - name: e
              fields: [proc.name]
        - rule: r
          exceptions:
            - name: e
              values: [[bash]]
            - name: new
              fields: fd.name
              values: [/etc]
          override:
            exceptions: append
    """)
    assert errors(ruleset) == []
    assert ruleset.rule("r").condition == (
        "(evt.type = open) and not (( proc.name = bash)) and not (fd.name in (/etc))"
    )


@pytest.mark.parametrize("exception,message,line", [
    ("fields: proc.name\n      comps: =\n      values: [x]",
     "when fields is a single value, comps must be one of (in, pmatch, intersects)", 14),
    ("fields: [proc.name, fd.name]\n      comps: [=]", "fields and comps lists must have equal length", 12),
    ("fields: [proc.name]\n      comps: [~=]", "'~=' is not a supported comparison operator", 14),
    ("fields: [proc.name, fd.name]\n      values:\n        - [x]", "Fields and values lists must have equal length", 15),
    ("fields: proc.name\n      values: [[x]]", "Expected values array to contain a list of strings", 14),
])
def test_exception_errors_are_located(tmp_path, exception, message, line):
    ruleset = load_text(tmp_path, rule_text("ok"), textwrap.dedent("""
        - rule: r
          desc: d
          condition: evt.type = open
          output: o
          priority: INFO
          exceptions:
            - name: e
              {exception}
    """).format(exception=exception))
    assert errors(ruleset) == [message]
    assert ruleset.errors[0].location.line == line
    assert ruleset.errors[0].item_name == "r"
    assert [r.name for r in ruleset.rules] == ["ok"]


# ------------------------------------------------------------------ lists


def test_list_substitution_like_falco(tmp_path):
    ruleset = load_text(tmp_path, """
        - list: base
          items: [a]
        - list: empty
          items: []
        - list: nested
          items: [base, "with space", "'quoted'", nested_later]
        - list: nested_later
          items: [z]
    """, rule_text(condition="proc.name in (nested, empty, b, unknown_name) and proc.pname in (empty)"))
    assert errors(ruleset) == []
    assert ruleset.lists["nested"] == ("a", "with space", "'quoted'", "nested_later")
    first, second = [c.right.items for c in comparisons(ruleset.rule("r"))]
    # nested_later was defined after nested, so Falco leaves that item as is...
    # ...but its textual pass for nested_later then substitutes the pasted name.
    assert [(i.value, i.quoted) for i in first] == [
        ("a", False), ("with space", True), ("quoted", True), ("z", False), ("b", False), ("unknown_name", False)
    ]
    assert second == ()


def test_list_named_as_a_single_value_is_pasted_like_falco(tmp_path):
    ruleset = load_text(tmp_path, """
        - list: one
          items: ["/etc/x y"]
        - list: two
          items: [a, b]
    """, rule_text("ok", "fd.name startswith one"), rule_text("bad", "proc.name = two"))
    assert [c.right.value for c in comparisons(ruleset.rule("ok"))] == ["/etc/x y"]
    assert errors(ruleset) == [
        "list 'two' is pasted here by Falco and then cannot be parsed: it has 2 items where '=' takes one value"
    ]


def test_list_errors(tmp_path):
    ruleset = load_text(tmp_path, """
        - list: shells
          items: [bash, "a(b"]
    """, rule_text("a", "proc.name in shells") + rule_text("b", "proc.name in nolist")
        + rule_text("c", "proc.name in (shells)") + rule_text("d", "proc.name in (bash)"))
    messages = errors(ruleset)
    assert messages[0].startswith("list 'shells' must be written in parentheses")
    assert messages[1] == "unknown list 'nolist'"
    assert messages[2].startswith("list 'shells' has items libsinsp cannot parse")
    assert [r.name for r in ruleset.rules] == ["d"]


# ------------------------------------------------------------------ errors


BAD_FILE = """\
- macro: spawned
  condition: evt.type = execve
- rule: Good one
  desc: fine
  condition: spawned and proc.name = bash
  output: ok
  priority: INFO
- rule: Unknown macro
  desc: d
  condition: >
    spawned and
      proc.name = x and nosuch_macro
  output: o
  priority: INFO
- rule: Syntax
  desc: d
  condition: "spawned and proc.name = = bash"
  output: o
  priority: INFO
- rule: Missing output
  desc: d
  condition: spawned
  priority: INFO
- rule: Bad priority
  desc: d
  condition: spawned
  output: o
  priority: LOUD
- rule: Good two
  desc: fine
  condition: spawned
  output: ok
  priority: INFO
"""


def test_all_errors_in_one_pass_with_locations_and_good_rules_still_load(tmp_path):
    path = write(tmp_path, "bad.yaml", BAD_FILE)
    ruleset = load_rules([path])
    assert [r.name for r in ruleset.rules] == ["Good one", "Good two"]
    found = [(f.item_name, f.location.line, f.location.col, f.message.split(":")[0]) for f in ruleset.errors]
    assert sorted(found) == sorted([
        ("Unknown macro", 12, 25, "Undefined macro 'nosuch_macro' used in filter."),
        ("Syntax", 17, 39, "expected a string value or a field with a valid transformer"),
        ("Missing output", 20, 3, "Item has no mapping for key 'output'"),
        ("Bad priority", 28, 13, "Invalid priority 'LOUD'"),
    ])
    unknown = next(f for f in ruleset.errors if f.item_name == "Unknown macro")
    text = unknown.format()
    assert text.startswith(f"{path}:12:25: error: Undefined macro 'nosuch_macro' used in filter. [rule 'Unknown macro']")
    assert text.splitlines()[1].strip() == "proc.name = x and nosuch_macro"
    assert text.splitlines()[2].strip() == "^" * len("nosuch_macro")


def test_error_in_appended_condition_points_at_the_append(tmp_path):
    ruleset = load_text(tmp_path, rule_text("r") + "- rule: r\n  condition: and not_a_macro\n  append: true\n")
    (finding,) = ruleset.errors
    assert (finding.location.line, finding.location.col) == (7, 18)


def test_warnings_are_kept_apart_from_errors(tmp_path):
    ruleset = load_text(tmp_path, """
        - macro: unused
          condition: proc.name = x
        - something: else
    """, rule_text("everything", "proc.name = bash") + "  bogus_key: 1\n")
    assert ruleset.errors == []
    codes = sorted(w.code for w in ruleset.warnings)
    assert codes == ["no-evttype", "unknown-item", "unknown-key", "unused-macro"]
    assert all(w.severity is Severity.WARNING and w.location for w in ruleset.warnings)


def test_lint_unsafe_na_check_and_keys_ignored_by_append(tmp_path):
    ruleset = load_text(tmp_path, rule_text("r", "evt.type = open and container.image.repository = <NA>"),
                        "- rule: r\n  condition: or evt.type = close\n  output: x\n  append: true\n")
    assert ruleset.errors == []
    found = sorted((w.code, w.location.line, w.location.col) for w in ruleset.warnings)
    assert found == [("deprecated-append", 9, 3), ("ignored-key", 8, 3), ("unsafe-na-check", 3, 34)]


def test_warn_evttypes_false_silences_the_warning(tmp_path):
    ruleset = load_text(tmp_path, rule_text("r", "proc.name = bash") + "  warn_evttypes: false\n")
    assert [w.code for w in ruleset.warnings] == []


def test_locate_nodes_in_block_and_quoted_scalars(tmp_path):
    ruleset = load_text(tmp_path, """
        - macro: m
          condition: >
            evt.type = open
              and fd.name != '/x y'
        - rule: r
          desc: d
          condition: "m and\\tproc.name = \\"x\\""
          output: o
          priority: INFO
    """)
    assert errors(ruleset) == []
    rule = ruleset.rule("r")
    located = {c.left.name: ruleset.locate(c) for c in comparisons(rule)}
    assert (located["evt.type"].line, located["evt.type"].col) == (3, 5)
    assert located["fd.name"].line == 4
    assert (located["proc.name"].line, located["proc.name"].col) == (7, 22)


# ------------------------------------------------------------------ CLI


def test_cli_check_clean_and_failing(tmp_path):
    good = write(tmp_path, "good.yaml", rule_text("Open files", "evt.type in (open, openat) and fd.name = x"))
    runner = CliRunner()
    result = runner.invoke(main, ["rules", "check", str(good)])
    assert result.exit_code == 0, result.output
    assert "Open files  evt.type: open, openat" in result.stdout
    assert "1 rules loaded (1 enabled)" in result.stdout

    bad = write(tmp_path, "bad.yaml", BAD_FILE)
    result = runner.invoke(main, ["rules", "check", str(good), str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:12:25: error: Undefined macro 'nosuch_macro'" in result.stderr
    assert "4 errors" in result.stdout


def test_cli_missing_file_is_an_error(tmp_path):
    result = CliRunner().invoke(main, ["rules", "check", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "cannot read rules file" in result.stderr


# ------------------------------------------------------------------ fuzz

YAML_SOUP = st.lists(st.sampled_from([
    "- ", "rule: ", "macro: ", "list: ", "condition: ", "items: ", "exceptions:", "\n", "  ", "    ", "[", "]",
    "{", "}", ",", ":", "=", "yes", "no", "append: true", "override:", "priority: INFO", "evt.type = open",
    "proc.name in (", ")", "'", '"', "fields: [a.b, c.d]", "values:", "- [x, y]", "name: e", "&a", "*a", "!!str",
    "desc: d", "output: o", "enabled: false", "\t", "é",
]), max_size=40).map("".join)


@given(YAML_SOUP)
def test_fuzz_loader_reports_and_never_crashes(text):
    collector = Collector()
    collector.read_text("fuzz.yaml", text)
    ruleset = compile_ruleset(collector, ["fuzz.yaml"])
    for finding in ruleset.findings:
        assert finding.location is not None and finding.location.file == "fuzz.yaml"
        finding.format()


@pytest.mark.parametrize("text,message", [
    ("- &a [*a]\n", "invalid YAML: an alias refers to a node containing it"),
    ("[" * 5000, "invalid YAML"),
    ("- macro: m\n  condition:\n", "Value for key 'condition' is empty"),
    ("\x00", "invalid YAML: unacceptable character"),
])
def test_hostile_yaml_is_reported_not_raised(tmp_path, text, message):
    ruleset = load_text(tmp_path, text)
    assert ruleset.errors and ruleset.errors[0].message.startswith(message)


def test_long_lines_are_shown_as_a_window_around_the_error(tmp_path):
    ruleset = load_text(tmp_path, "- macro: m\n  condition: " + "a and " * 100 + " = x\n")
    shown, caret = ruleset.errors[0].format().splitlines()[1:]
    assert len(shown) < 140 and shown.startswith("    ...")
    assert shown[caret.index("^")] == "="


def test_crlf_and_bom_files(tmp_path):
    path = tmp_path / "win.yaml"
    text = rule_text("ok") + rule_text("bad", "evt.type = open and nosuch")
    path.write_bytes(b"\xef\xbb\xbf" + text.lstrip("\n").replace("\n", "\r\n").encode())
    ruleset = load_rules([path])
    assert [r.name for r in ruleset.rules] == ["ok"]
    (finding,) = ruleset.errors
    assert (finding.location.line, finding.location.col) == (9, 34)
    assert finding.format().splitlines()[1] == "      condition: evt.type = open and nosuch"
