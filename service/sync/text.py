"""Three-way merge of prose, word by word.

Line-based merging would call two edits of one paragraph a conflict; people
write journal entries as long paragraphs, so the text is split into words,
spaces and punctuation and merged as a sequence of those with merge3.
"""

from __future__ import annotations

import re

from merge3 import Merge3

_TOKENS = re.compile(r"\s+|\w+|[^\w\s]")


def tokens(text: str) -> list[str]:
    return _TOKENS.findall(text)


def merge_text(base: str, theirs: str, yours: str) -> str | None:
    """The text with both sides' edits, or None when the edits overlap."""
    merged: list[str] = []
    for group in Merge3(tokens(base), tokens(theirs), tokens(yours)).merge_groups():
        if group[0] == "conflict":
            return None
        merged.extend(group[1])
    return "".join(merged)
