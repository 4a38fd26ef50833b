"""The merge rules of sync, as pure functions.

Nothing here touches the database, the web framework or Redis (a test
enforces it): the rules are tested on their own, with property tests, and the
API feeds them what it loaded and writes what they decide.
"""
