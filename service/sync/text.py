"""Three-way merge of prose, word by word.

Line-based merging would call two edits of one paragraph a conflict; people
write journal entries as long paragraphs, so the text is split into words,
spaces and punctuation and merged as a sequence of those with merge3.

The words all three versions share at the start and at the end are set aside
before merge3 runs: an edit usually touches a few words of a long entry, and
merge3's matcher is quadratic in the words it is given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import takewhile

from merge3 import Merge3

# Shared words kept next to the edits, so merge3 still sees their surroundings and aligns
# repeated words as it would with the whole text.
MARGIN = 8
_TOKENS = re.compile(r"\s+|\w+|[^\w\s]")


def tokens(text: str) -> list[str]:
    return _TOKENS.findall(text)


def merge_text(base: str, theirs: str, yours: str) -> str | None:
    """The text with both sides' edits, or None when the edits overlap."""
    b, t, y = tokens(base), tokens(theirs), tokens(yours)
    head = max(_shared(zip(b, t, y, strict=False)) - MARGIN, 0)
    # Counted on what follows the shared start only, so the two never overlap.
    tail = max(_shared(zip(reversed(b[head:]), reversed(t[head:]), reversed(y[head:]), strict=False)) - MARGIN, 0)
    merged = b[:head]
    for group in Merge3(b[head : len(b) - tail], t[head : len(t) - tail], y[head : len(y) - tail]).merge_groups():
        if group[0] == "conflict":
            return None
        merged.extend(group[1])
    merged.extend(b[len(b) - tail :])
    return "".join(merged)


def _shared(triples: Iterable[tuple[str, str, str]]) -> int:
    """How many triples, from the first, hold one token three times."""
    return sum(1 for _ in takewhile(lambda triple: triple[0] == triple[1] == triple[2], triples))
