"""Three-way merge of prose, word by word.

Line-based merging would call two edits of one paragraph a conflict; people
write journal entries as long paragraphs, so the text is split into words,
spaces and punctuation and merged as a sequence of those with merge3.

The words all three versions share at the start and at the end are set aside
before merge3 runs: an edit usually touches a few words of a long entry, and
merge3's matcher is quadratic in the words it is given. They are found as
characters, and only the words next to the edits are split out: splitting a
whole entry three times took longer than the merge itself. Where a token ends
depends only on the two characters either side (a run of word characters, a
run of spaces, or one punctuation mark), so the words found near an edit are
the ones splitting the whole text would find.
"""

from __future__ import annotations

import re

from merge3 import Merge3

# Shared words kept next to the edits, so merge3 still sees their surroundings and aligns
# repeated words as it would with the whole text.
MARGIN = 8
_TOKENS = re.compile(r"\s+|\w+|[^\w\s]")
# How many characters around an edit are split at first; more when their words are longer.
_WINDOW = 64


def tokens(text: str) -> list[str]:
    return _TOKENS.findall(text)


def merge_text(base: str, theirs: str, yours: str) -> str | None:
    """The text with both sides' edits, or None when the edits overlap."""
    texts = (base, theirs, yours)
    # The start all three share, up to the end of its last whole word, less MARGIN words.
    shared = _common_prefix(base, theirs, yours)
    if not all(_is_boundary(text, shared) for text in texts):
        shared = _words_before(base, shared, 1)
    head = _words_before(base, shared, MARGIN)
    # The end all three share after that start, from the start of its first whole word, less MARGIN words.
    shared = len(base) - _common_suffix(base, theirs, yours, head)
    if not all(_is_boundary(text, shared - len(base) + len(text)) for text in texts):
        shared = _words_after(base, shared, 1)
    tail = len(base) - _words_after(base, shared, MARGIN)
    b, t, y = (tokens(text[head : len(text) - tail]) for text in texts)
    merged = [base[:head]]
    for group in Merge3(b, t, y).merge_groups():
        if group[0] == "conflict":
            return None
        merged.extend(group[1])
    merged.append(base[len(base) - tail :])
    return "".join(merged)


def _common_prefix(a: str, b: str, c: str) -> int:
    """How many characters the three share from the start: a binary search of slices, which
    compares in C rather than character by character in Python."""
    low, high = 0, min(len(a), len(b), len(c))
    while low < high:
        middle = (low + high + 1) // 2
        part = a[low:middle]
        if b.startswith(part, low) and c.startswith(part, low):
            low = middle
        else:
            high = middle - 1
    return low


def _common_suffix(a: str, b: str, c: str, start: int) -> int:
    """How many characters the three share at the end, after the first `start` of each."""
    low, high = 0, min(len(a), len(b), len(c)) - start
    while low < high:
        middle = (low + high + 1) // 2
        part = a[len(a) - middle : len(a) - low]
        if b.endswith(part, 0, len(b) - low) and c.endswith(part, 0, len(c) - low):
            low = middle
        else:
            high = middle - 1
    return low


def _is_boundary(text: str, at: int) -> bool:
    """Whether `at` is an edge between tokens of `text` (its start and end are): set by the
    characters either side alone."""
    if at <= 0 or at >= len(text):
        return True
    token = _TOKENS.match(text, at - 1, at + 1)
    return token is not None and token.end() == at


def _words_before(text: str, end: int, count: int) -> int:
    """Where the token `count` (at least 1) tokens before `end` begins, or 0 when fewer precede
    it. The token that ends at `end` counts even when `end` cuts it short."""
    width = _WINDOW
    while True:
        start = max(end - width, 0)
        starts = [token.start() for token in _TOKENS.finditer(text, start, end)]
        if start > 0:
            starts = starts[1:]  # the first may begin inside a token
        if len(starts) >= count:
            return starts[-count]
        if start == 0:
            return 0
        width *= 4


def _words_after(text: str, begin: int, count: int) -> int:
    """Where the token `count` (at least 1) tokens after `begin` ends, or the text's end when
    fewer follow. The token that begins at `begin` counts even when `begin` is inside it."""
    width = _WINDOW
    while True:
        stop = min(begin + width, len(text))
        ends = [token.end() for token in _TOKENS.finditer(text, begin, stop)]
        if stop < len(text):
            ends = ends[:-1]  # the last may end inside a token
        if len(ends) >= count:
            return ends[count - 1]
        if stop == len(text):
            return len(text)
        width *= 4
