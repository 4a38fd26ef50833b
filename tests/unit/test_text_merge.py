"""Text merges split only the words next to the edits, and merge as if the whole text were split."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from merge3 import Merge3

from service.sync import text
from service.sync.text import MARGIN, merge_text, tokens

# Pieces whose joins make every kind of token edge: runs of word characters and of spaces that
# continue across a join, punctuation, an underscore and a digit (word characters), a newline,
# and letters outside ASCII.
_PIECES = st.sampled_from(["a", "b", "ab", " ", "  ", "\n", ".", ",", "_", "1", "é", "ß", "—"])
_TEXTS = st.lists(_PIECES, max_size=30).map("".join)


def whole_text_merge(base: str, theirs: str, yours: str) -> str | None:
    """The rule as stated: the three split whole, the shared tokens at both ends set aside but
    MARGIN of them, merge3 on the rest."""
    b, t, y = tokens(base), tokens(theirs), tokens(yours)

    def shared(triples: list[tuple[str, str, str]]) -> int:
        count = 0
        for one, two, three in triples:
            if not one == two == three:
                break
            count += 1
        return count

    head = max(shared(list(zip(b, t, y, strict=False))) - MARGIN, 0)
    ends = list(zip(reversed(b[head:]), reversed(t[head:]), reversed(y[head:]), strict=False))
    tail = max(shared(ends) - MARGIN, 0)
    merged = b[:head]
    for group in Merge3(b[head : len(b) - tail], t[head : len(t) - tail], y[head : len(y) - tail]).merge_groups():
        if group[0] == "conflict":
            return None
        merged.extend(group[1])
    merged.extend(b[len(b) - tail :])
    return "".join(merged)


@st.composite
def edited(draw: st.DrawFn) -> tuple[str, str, str]:
    """A base and two edits of it, within shared text of any length on either side."""
    before, after = draw(_TEXTS), draw(_TEXTS)
    base = draw(_TEXTS)
    sides = []
    for _ in range(2):
        text = list(base)
        for at, piece, drop in draw(st.lists(st.tuples(st.integers(0, 30), _PIECES | st.just(""), st.booleans()))):
            at = min(at, len(text))
            if drop and at < len(text):
                del text[at]
            text.insert(at, piece)
        sides.append("".join(text))
    repeat = draw(st.integers(0, 40))
    before, after = before * (1 + repeat // 10), after * (1 + repeat % 10)
    return before + base + after, before + sides[0] + after, before + sides[1] + after


@settings(max_examples=3000, deadline=None)
@given(edited(), st.integers(1, 2 * text._WINDOW))
def test_a_merge_splits_only_near_the_edits_and_comes_out_as_a_whole_text_merge(
    texts: tuple[str, str, str], window: int
) -> None:
    # Whatever the first window's width: a narrow one starts and ends inside tokens more often.
    first_window = text._WINDOW
    text._WINDOW = window
    try:
        assert merge_text(*texts) == whole_text_merge(*texts)
    finally:
        text._WINDOW = first_window


def test_an_edit_deep_in_a_long_entry_merges_with_one_at_its_end() -> None:
    words = " ".join(f"walk{n}" for n in range(3000))
    base, theirs, yours = f"{words} end.", f"{words} end, gently.", f"{words.replace('walk1500', 'stroll')} end."
    assert merge_text(base, theirs, yours) == f"{words.replace('walk1500', 'stroll')} end, gently."
    assert merge_text(base, theirs, yours) == whole_text_merge(base, theirs, yours)
