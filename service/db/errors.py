"""Reading database errors that have a meaning for the person asking."""

from __future__ import annotations

import asyncpg
from sqlalchemy.exc import IntegrityError


def owner_gone(error: IntegrityError | asyncpg.ForeignKeyViolationError) -> bool:
    """A row could not point at its person: the account was deleted while an
    access token for it was still valid. Every owner key is named
    fk_<table>_user_id_users."""
    return "_user_id_users" in str(error.orig if isinstance(error, IntegrityError) else error)
