"""The hunt's raw candidate test keeps every event that can fire a rule.

`exact_prefilter` keeps, of a prefilter that also reads fields the raw row
cannot give, the terms of its top-level AND that it can: each is implied by
the whole, so no event that passes the prefilter is left out. The splitter
must respect parentheses and quotes (Falco rules compare with strings that
hold ' AND ' and parentheses). Whole hunts through the candidate path are
checked against the full `events` view in tests/test_state_candidates.py.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from analyzer.follow.candidates import _conjuncts, exact_prefilter

_TEXT = st.text(alphabet=st.sampled_from(list("ab ()'\"AND,")), max_size=12)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_TERM = st.one_of(
    _TEXT.map(lambda t: f'("fd.name" = {_literal(t)})'),
    _TEXT.map(lambda t: f"contains(\"proc.cmdline\", {_literal(t)})"),
    st.tuples(_TEXT, _TEXT).map(lambda p: f'(("fd.name" = {_literal(p[0])}) OR ("evt.type" = {_literal(p[1])}))'),
    st.just('("evt.rawres" >= 0)'),
)


@given(st.lists(_TERM, min_size=1, max_size=5), st.integers(0, 2))
def test_property_top_level_terms_come_back_whatever_their_quotes_and_parentheses(terms, wraps):
    sql = " AND ".join(terms)
    for _ in range(wraps):
        sql = f"({sql})"
    # no term has a top-level AND of its own; a lone term comes back without its parentheses
    assert all(len(_conjuncts(term)) == 1 for term in terms)
    assert _conjuncts(sql) == (terms if len(terms) > 1 else [_conjuncts(terms[0])[0]])


def test_terms_reading_state_are_dropped_and_the_rest_kept():
    prefilter = ('(("evt.type" IN (\'open\', \'openat\')) AND ("fd.name" = \'/etc/shadow\') '
                 'AND (NOT coalesce(("proc.name" = \'sshd\'), false)))')
    assert exact_prefilter(prefilter) == '(("evt.type" IN (\'open\', \'openat\'))) AND (("fd.name" = \'/etc/shadow\'))'
    assert exact_prefilter('("proc.name" = \'x AND y\')') is None
    assert exact_prefilter(None) is None
    whole = '("evt.type" = \'openat\') AND ("fd.directory" = \'/etc\')'
    assert exact_prefilter(whole) == whole
