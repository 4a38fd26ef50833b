"""RFC 9457 problem details, the one shape of every error answer."""

from __future__ import annotations

from schemas.base import ServerOutput

PROBLEM_MEDIA_TYPE = "application/problem+json"


class FieldError(ServerOutput):
    """One offending field: where it is and which rule or limit it broke."""

    path: str
    message: str


class Problem(ServerOutput):
    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] = []
