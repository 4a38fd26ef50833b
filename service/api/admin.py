"""`/admin/*`: operator calls, guarded by ADMIN_TOKEN; none at all when it is unset."""

from __future__ import annotations

import hmac
import uuid
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody
from redis.exceptions import RedisError

from schemas.admin import InsightsRun, JobAccepted
from schemas.health import AdminHealth
from schemas.jobs import COMPUTE_INSIGHTS
from service.health import HealthCheck
from service.problems import ProblemError, invalid, problem_specs
from service.queue import ArqRedis
from service.settings import Settings


def admin_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    settings: Settings = connection.app.state["settings"]
    offered = connection.headers.get("authorization", "")
    expected = f"Bearer {settings.admin_token}" if settings.admin_token else None
    if expected is None or not hmac.compare_digest(offered.encode(), expected.encode()):
        raise ProblemError(401, "unauthorized", "An admin token is required.")


class AdminController(Controller):
    path = "/admin"
    tags = ["operations"]
    guards = [admin_only]

    @get("/health", responses={503: ResponseSpec(AdminHealth, description="degraded or down"), **problem_specs(401)})
    async def health(self, health_check: NamedDependency[HealthCheck]) -> Response[AdminHealth]:
        """Every dependency, worker and backlog; 503 when anything an operator must act on fails."""
        report = await health_check.run()
        return Response(report, status_code=200 if report.status == "ok" else 503)

    @post("/insights/run", status_code=202, responses=problem_specs(400, 401, 422, 503))
    async def run_insights(
        self, request: Request[Any, Any, Any], data: JSONBody[InsightsRun], redis: NamedDependency[ArqRedis]
    ) -> JobAccepted:
        """Compute again, now, the weekly insight of a week for one person or everyone."""
        if data.week_start is not None and data.week_start.weekday() != 0:
            raise invalid("week_start", "must be a Monday")
        job_id = f"insights:{uuid.uuid4().hex}"
        payload = {
            "week_start": data.week_start.isoformat() if data.week_start else None,
            "user_id": str(data.user_id) if data.user_id else None,
        }
        try:
            await redis.enqueue_job(COMPUTE_INSIGHTS, payload, _job_id=job_id)
        except (RedisError, OSError):
            raise ProblemError(503, "unavailable", "The job queue cannot be reached; try again shortly.") from None
        return JobAccepted(job_id=job_id)
