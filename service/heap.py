"""Garbage-collector settings for the long-running processes (API and worker).

A sync batch allocates thousands of short-lived objects; with Python's default
thresholds the collector runs every 700 allocations, and its occasional full
collections walk every object loaded at start-up (the web framework, SQLAlchemy,
the OpenAPI schema), pausing a process for tens of milliseconds. Start-up objects
live as long as the process, so they are moved out of the collector's sight once
the app is built, and the young generation is allowed to grow before a collection.
Reference cycles are still found and freed, only less often.
"""

from __future__ import annotations

import gc

# Allocations before a young collection (default 700), and how many of those before an older one.
THRESHOLDS = (50_000, 20, 100)


def settle() -> None:
    """Call once the process has built what it keeps for its lifetime, before it serves."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
