"""Log lines are JSON and never carry passwords, tokens or free text."""

from __future__ import annotations

import json

import pytest
import structlog

from service.logs import configure_logging


def test_sensitive_fields_are_redacted_and_lines_are_json(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    structlog.get_logger("kindsync.test").info(
        "signed_in", password="hunter2hunter2", refresh_token="r-123", body="I felt small today", user="u1"
    )
    line = capsys.readouterr().out.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["event"] == "signed_in"
    assert record["user"] == "u1"
    for secret in ("hunter2hunter2", "r-123", "I felt small today"):
        assert secret not in line


def test_tracebacks_never_show_local_variables(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")

    def fail(password: str) -> None:
        raise RuntimeError("boom")

    secret = "".join(reversed("2retnuh2retnuh"))  # built at run time: only a frame's locals hold it
    try:
        fail(secret)
    except RuntimeError:
        structlog.get_logger("kindsync.test").exception("failed")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    record = json.loads(line)
    assert "RuntimeError: boom" in record["exception"]
    assert "fail(secret)" in record["exception"], "the traceback is there"
    assert secret not in line
