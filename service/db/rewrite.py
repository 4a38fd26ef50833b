"""Data migrations' tool: rewrite some columns of every row of a table, a page at a time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

PAGE = 1000


def rewrite(
    conn: sa.Connection,
    table: str,
    key_columns: tuple[str, ...],
    columns: str,
    change: Callable[[Any], tuple[Any, ...] | None],
    assignments: str,
) -> None:
    """Page through `table` in key order; `change` answers (a, b) for a row to update, None to keep it."""
    keys = ", ".join(key_columns)
    key_types = {"user_id": "uuid", "id": "uuid", "record_id": "uuid", "batch_id": "uuid", "version": "int"}
    after: tuple[Any, ...] | None = None
    while True:
        where = f"WHERE ({keys}) > ({', '.join(f'${i + 1}' for i in range(len(key_columns)))})" if after else ""
        rows = conn.exec_driver_sql(
            f"SELECT {keys}, {columns} FROM {table} {where} ORDER BY {keys} LIMIT {PAGE}",  # noqa: S608
            after or (),
        ).all()
        if not rows:
            return
        updates = [(row, out) for row in rows if (out := change(row)) is not None]
        if updates:
            n = len(key_columns)
            unnested = ", ".join(f"${i + 1}::{key_types[c]}[]" for i, c in enumerate(key_columns))
            matches = " AND ".join(f"t.{c} = u.{c}" for c in key_columns)
            conn.exec_driver_sql(
                f"UPDATE {table} t SET {assignments} FROM unnest({unnested}, ${n + 1}::text[], ${n + 2}::bytea[]) "  # noqa: S608
                f"AS u({keys}, a, b) WHERE {matches}",
                (
                    *([getattr(row, c) for row, _ in updates] for c in key_columns),
                    [out[0] for _, out in updates],
                    [out[1] for _, out in updates],
                ),
            )
        after = tuple(getattr(rows[-1], c) for c in key_columns)
