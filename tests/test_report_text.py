"""Hostile text: display strings, clipping, JSON for script blocks, ATT&CK names."""

from __future__ import annotations

import json
import re

from hypothesis import given
from hypothesis import strategies as st

from analyzer.report.attack import attack_tag
from analyzer.report.render import script_json
from analyzer.report.text import clip, display, format_ns

UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def undisplay(text: str) -> bytes:
    """Inverse of display(), for the round-trip property."""
    out = bytearray()
    i = 0
    named = {"n": b"\n", "r": b"\r", "t": b"\t", "\\": b"\\"}
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out += ch.encode("utf-8")
            i += 1
        elif text[i + 1] in named:
            out += named[text[i + 1]]
            i += 2
        elif text[i + 1] == "x":
            code = int(text[i + 2 : i + 4], 16)
            # \xNN below 0x80 is an ASCII control; from 0x80 up, an invalid byte.
            out += bytes([code])
            i += 4
        else:  # \uNNNN
            out += chr(int(text[i + 2 : i + 6], 16)).encode("utf-8")
            i += 6
    return bytes(out)


@given(st.text())
def test_display_output_has_no_control_or_invisible_characters(value):
    assert not UNSAFE.search(display(value))


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs"), blacklist_characters="\\")))
def test_display_keeps_ordinary_text_as_is(value):
    assert display(value) == value


@given(st.binary())
def test_display_of_bytes_never_fails_and_escapes_controls(raw):
    shown = display(raw)
    assert not UNSAFE.search(shown)
    assert isinstance(shown, str)


@given(st.binary())
def test_surrogateescape_str_shows_like_the_bytes_it_came_from(raw):
    assert display(raw.decode("utf-8", "surrogateescape")) == display(raw)


@given(st.binary() | st.text().map(lambda t: t.encode("utf-8")))
def test_display_is_reversible(raw):
    # Distinct values show distinctly: a file named "\\xff" can't pass for an invalid byte.
    assert undisplay(display(raw)) == raw


def test_display_examples():
    assert display("a\nb") == "a\\nb"
    assert display("evil\u202etxt.exe") == "evil\\u202etxt.exe"
    assert display(b"\xff/tmp/x") == "\\xff/tmp/x"
    assert display("back\\slash") == "back\\\\slash"
    assert display(None) == ""
    assert display(42) == "42"


@given(st.text(), st.integers(min_value=1, max_value=300))
def test_clip_head_is_a_visible_prefix_of_the_full_value(value, limit):
    c = clip(value, limit)
    assert c.full == display(value)
    assert c.full.startswith(c.head)
    assert len(c.head) <= limit
    assert c.clipped == (len(c.full) > limit)
    assert c.hidden_chars == len(c.full) - len(c.head)


def test_clip_keeps_100_kb_in_full():
    big = "A" * 100_000
    c = clip(big)
    assert c.clipped and len(c.full) == 100_000 and len(c.head) < 200


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@given(json_values)
def test_script_json_round_trips_and_cannot_close_its_script_block(value):
    text = str(script_json(value))
    assert "<" not in text and ">" not in text and "&" not in text
    assert text.isascii()
    assert json.loads(text) == value


def test_format_ns_is_utc_with_nanoseconds():
    assert format_ns(1_700_000_000_123_456_789) == "2023-11-14 22:13:20.123456789Z"
    assert format_ns(None) == ""


def test_attack_tags_become_readable():
    t = attack_tag("T1003.008")
    assert t.kind == "technique" and "shadow" in t.name and t.url.endswith("/T1003/008/")
    assert attack_tag("mitre_credential_access").name == "Credential Access"
    assert attack_tag("T9999").name == ""  # unknown id: shown without a name, not dropped
    assert attack_tag("filesystem") is None


def test_every_technique_falco_rules_use_has_a_name():
    from pathlib import Path

    rules = Path(__file__).resolve().parents[1] / ".." / "shared" / "falco" / "rules"
    ids = set()
    for path in rules.glob("*.yaml"):
        ids |= set(re.findall(r"\bT\d{4}(?:\.\d{3})?\b", path.read_text()))
    assert ids, "Falco's rules files are missing"
    assert {i for i in ids if not attack_tag(i).name} == set()
