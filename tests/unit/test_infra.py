"""The deployment files in infra/ agree with the code and the README.

No Docker or cluster is needed: the files are parsed, and every command they run is parsed by
the real `kindsync` argument parser, so a renamed command or setting fails here, not at 3 a.m.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
WORKER_CHECK = ["kindsync", "worker", "--check"]
DEFAULT_WORKER_SHUTDOWN_GRACE = 20
DEFAULT_WORKER_METRICS_PORT = 9101
SECRET_NAMES = {
    "SECRET_KEY",
    "MASTER_KEYS",
    "ADMIN_TOKEN",
    "POSTGRES_PASSWORD",
    "APNS_PRIVATE_KEY",
    "FCM_SERVICE_ACCOUNT",
}

Doc = dict[str, Any]


# ---- reading the files


@functools.cache  # parsed once per run: the tests only read them
def _load_all(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _compose() -> Doc:
    (compose,) = _load_all(INFRA / "compose.yaml")
    return compose


def _services() -> dict[str, Doc]:
    return _compose()["services"]  # type: ignore[no-any-return]


def _manifests() -> list[Doc]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in _load_all(path)]


def _manifest(kind: str, name: str) -> Doc:
    found = [doc for doc in _manifests() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name} in infra/k8s, found {len(found)}"
    return found[0]


def _pod_spec(workload: Doc) -> Doc:
    return workload["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def _container(workload: Doc) -> Doc:
    (container,) = _pod_spec(workload)["containers"]
    return container  # type: ignore[no-any-return]


def _config() -> dict[str, str]:
    return _manifest("ConfigMap", "kindsync")["data"]  # type: ignore[no-any-return]


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", (INFRA / "Dockerfile").read_text())
    lines = [line.strip() for line in joined.splitlines()]
    pairs = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    return [(words[0].upper(), words[1] if len(words) > 1 else "") for words in pairs]


def _final_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def _documented_variables() -> set[str]:
    """Every variable named in the first column of the README's Configuration table."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            first_cell = row.split("|")[1]
            names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", first_cell))
    assert names, "README's Configuration table not found"
    return names


def _kindsync(argv: list[str]) -> argparse.Namespace:
    """Parse as `kindsync <argv>` would: a command the CLI does not know fails the test."""
    from service.cli import build_parser

    try:
        return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`kindsync {shlex.join(argv)}` is not a kindsync command")


def _kindsync_argv(container: Doc) -> list[str]:
    """What a container runs after the image's ENTRYPOINT ["kindsync"], or its own command."""
    command: list[str] = container.get("command", [])
    if command:
        assert command[0] == "kindsync", f"{container['name']} runs {command}, not kindsync"
        command = command[1:]
    return [*command, *container.get("args", [])]


def _environment(service: Doc) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): str(value) for key, value in env.items()}


def _kindsync_services() -> dict[str, Doc]:
    return {name: s for name, s in _services().items() if str(s.get("image", "")).startswith("kindsync")}


def _seconds(duration: str) -> int:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert duration, "empty duration"
    assert match, f"cannot read duration {duration!r}"
    return int(match[1] or 0) * 60 + int(match[2] or 0)


def _container_ports(container: Doc) -> dict[str, int]:
    return {str(port.get("name", port["containerPort"])): port["containerPort"] for port in container["ports"]}


def _resolve_port(container: Doc, port: int | str) -> int:
    return port if isinstance(port, int) else _container_ports(container)[port]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _pod_labels(workload: Doc) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]  # type: ignore[no-any-return]


def _worker_grace() -> int:
    return int(_config().get("WORKER_SHUTDOWN_GRACE", DEFAULT_WORKER_SHUTDOWN_GRACE))


def _env_names_in_use() -> Iterator[tuple[str, str]]:
    """(where, NAME) for every variable the deployment files hand to kindsync."""
    for name, service in _kindsync_services().items():
        for key in _environment(service):
            yield f"compose.yaml {name}", key
    for doc in _manifests():
        if doc["kind"] == "ConfigMap":
            yield from ((f"ConfigMap {doc['metadata']['name']}", key) for key in doc.get("data", {}))
        elif doc["kind"] == "Secret":
            for field in ("data", "stringData"):
                yield from ((f"Secret {doc['metadata']['name']}", key) for key in doc.get(field) or {})
        elif doc["kind"] in {"Deployment", "Job"}:
            for container in _pod_spec(doc)["containers"]:
                for item in container.get("env", []):
                    yield f"{doc['kind']} {doc['metadata']['name']}", item["name"]


# ---- every file parses


def test_every_yaml_file_in_infra_parses() -> None:
    """A typo in any manifest surfaces here rather than in `kubectl apply`."""
    paths = sorted(INFRA.rglob("*.yaml")) + sorted(INFRA.rglob("*.yml"))
    assert paths
    for path in paths:
        assert _load_all(path), f"{path} holds no document"
    for doc in _manifests():
        assert {"apiVersion", "kind", "metadata"} <= doc.keys()


# ---- compose


def test_compose_has_the_whole_stack() -> None:
    assert {"postgres", "redis", "migrate", "api", "worker"} <= _services().keys()


def test_migrations_run_once_before_the_api_and_the_worker() -> None:
    """`docker compose up` starts nothing that serves until `kindsync migrate` has succeeded."""
    services = _services()
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"
    _kindsync(services["migrate"]["command"])
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name


def test_compose_commands_are_kindsync_commands() -> None:
    services = _services()
    assert _kindsync(services["api"]["command"]).command == "run"
    assert _kindsync(services["worker"]["command"]).command == "worker"


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in _services().items():
        if service.get("restart") == "no":
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test, f"{name} has no healthcheck"


def test_compose_health_checks_ask_the_right_questions() -> None:
    """The API is healthy when it is ready (/readyz); the worker when its own check passes."""
    services = _services()
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    test = services["worker"]["healthcheck"]["test"]
    assert test == ["CMD", *WORKER_CHECK]
    assert _kindsync(test[2:]).check is True


def test_compose_worker_outlives_its_shutdown_grace() -> None:
    """SIGKILL must not land while running jobs are still being given time to finish."""
    worker = _services()["worker"]
    grace = int(_environment(worker).get("WORKER_SHUTDOWN_GRACE", DEFAULT_WORKER_SHUTDOWN_GRACE))
    assert _seconds(worker["stop_grace_period"]) > grace


def test_compose_requires_the_secrets_and_holds_none() -> None:
    """Missing SECRET_KEY or MASTER_KEYS stops compose with a message; no secret is in the file."""
    for name, service in _kindsync_services().items():
        env = _environment(service)
        for required in ("SECRET_KEY", "MASTER_KEYS"):
            assert env[required].startswith("${" + required + ":?"), f"{name}: {required} is not required"
    for name, service in _services().items():
        for key, value in _environment(service).items():
            if key in SECRET_NAMES:
                assert re.fullmatch(r"\$\{[A-Z_]+(:[?-][^}]*)?\}", value), f"{name}: {key} is written in the file"
            for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", value):
                assert password.startswith("${"), f"{name}: {key} holds a literal password"
    text = (INFRA / "compose.yaml").read_text()
    assert not re.search(r"[A-Za-z0-9+/]{43}=", text), "compose.yaml holds what looks like a base64 key"


# ---- Kubernetes: the API


def test_api_probes_liveness_and_readiness_on_the_right_paths_and_port() -> None:
    api = _manifest("Deployment", "kindsync-api")
    container = _container(api)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    port = int(_config()["PORT"])
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if probe in container:
            assert _resolve_port(container, container[probe]["httpGet"]["port"]) == port, probe
    service = _manifest("Service", "kindsync-api")
    assert _matches(service["spec"]["selector"], _pod_labels(api))
    for service_port in service["spec"]["ports"]:
        assert _resolve_port(container, service_port["targetPort"]) == port


def test_api_runs_the_api_on_several_replicas() -> None:
    api = _manifest("Deployment", "kindsync-api")
    assert api["spec"]["replicas"] >= 2
    assert _kindsync(_kindsync_argv(_container(api))).command == "run"


def test_api_pods_are_covered_by_a_disruption_budget() -> None:
    """A node drain never takes every API pod at once."""
    labels = _pod_labels(_manifest("Deployment", "kindsync-api"))
    budgets = [doc for doc in _manifests() if doc["kind"] == "PodDisruptionBudget"]
    assert any(
        _matches(b["spec"]["selector"]["matchLabels"], labels) and b["spec"].get("minAvailable", 0) >= 1
        for b in budgets
    )


@pytest.mark.parametrize(
    "kind_and_name", [("Deployment", "kindsync-api"), ("Deployment", "kindsync-worker"), ("Job", "kindsync-migrate")]
)
def test_pods_are_bounded_non_root_and_read_only(kind_and_name: tuple[str, str]) -> None:
    """Requests and limits set; no root; a read-only root filesystem with a writable /tmp."""
    workload = _manifest(*kind_and_name)
    pod, container = _pod_spec(workload), _container(workload)
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][bound].keys(), bound
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    assert security["runAsNonRoot"] is True
    assert security.get("runAsUser", 1) != 0
    assert security["readOnlyRootFilesystem"] is True
    tmp = [mount for mount in container["volumeMounts"] if mount["mountPath"] == "/tmp"]  # noqa: S108 (a mount path)
    assert tmp, "no writable /tmp"
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[tmp[0]["name"]]


def test_workloads_read_the_configmap_and_secret_that_exist() -> None:
    """envFrom of a missing ConfigMap or Secret keeps every pod from starting."""
    assert _manifest("ConfigMap", "kindsync")["data"]
    assert _manifest("Secret", "kindsync")["stringData"]
    for kind, name in (("Deployment", "kindsync-api"), ("Deployment", "kindsync-worker"), ("Job", "kindsync-migrate")):
        sources = _container(_manifest(kind, name))["envFrom"]
        assert {"configMapRef": {"name": "kindsync"}} in sources, name
        assert {"secretRef": {"name": "kindsync"}} in sources, name


def test_secret_is_a_template_of_placeholders() -> None:
    """Only placeholders are committed: REPLACE_ME, or empty (ADMIN_TOKEN unset: no admin access)."""
    secrets = [doc for doc in _manifests() if doc["kind"] == "Secret"]
    assert secrets
    for secret in secrets:
        assert not secret.get("data"), "base64 `data` hides what is committed; use stringData placeholders"
        for key, value in (secret.get("stringData") or {}).items():
            assert value == "" or "REPLACE_ME" in value, f"Secret {key} holds a value"


# ---- Kubernetes: the worker and the migrations


def test_worker_liveness_is_the_worker_check() -> None:
    worker = _manifest("Deployment", "kindsync-worker")
    container = _container(worker)
    assert _kindsync(_kindsync_argv(container)).command == "worker"
    command = container["livenessProbe"]["exec"]["command"]
    assert command == WORKER_CHECK
    args = _kindsync(command[1:])
    assert (args.command, args.check) == ("worker", True)


def test_worker_is_given_longer_than_its_shutdown_grace() -> None:
    worker = _manifest("Deployment", "kindsync-worker")
    assert _pod_spec(worker)["terminationGracePeriodSeconds"] > _worker_grace()


def test_worker_metrics_port_is_declared_and_scraped() -> None:
    worker = _manifest("Deployment", "kindsync-worker")
    port = int(_config().get("WORKER_METRICS_PORT", DEFAULT_WORKER_METRICS_PORT))
    assert port in _container_ports(_container(worker)).values()
    annotations = worker["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port


def test_worker_pods_are_covered_by_a_disruption_budget() -> None:
    labels = _pod_labels(_manifest("Deployment", "kindsync-worker"))
    budgets = [doc for doc in _manifests() if doc["kind"] == "PodDisruptionBudget"]
    assert any(_matches(b["spec"]["selector"]["matchLabels"], labels) for b in budgets)


def test_migrate_job_runs_migrate_and_cleans_up() -> None:
    job = _manifest("Job", "kindsync-migrate")
    assert _kindsync_argv(_container(job)) == ["migrate"]
    assert _kindsync(["migrate"]).command == "migrate"
    assert job["spec"]["backoffLimit"] >= 1
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert _pod_spec(job)["restartPolicy"] in {"Never", "OnFailure"}


# ---- every setting is a documented one


def test_every_variable_the_deployment_sets_is_documented() -> None:
    """A misspelt or undocumented variable is silently ignored by kindsync; catch it here."""
    documented = _documented_variables()
    unknown = sorted({f"{where}: {name}" for where, name in _env_names_in_use() if name not in documented})
    assert not unknown, f"not in the README's Configuration table: {unknown}"


# ---- Dockerfile


def test_dockerfile_builds_in_stages_with_the_locked_dependencies() -> None:
    instructions = _dockerfile()
    assert sum(op == "FROM" for op, _ in instructions) >= 2
    syncs = [args for op, args in instructions if op == "RUN" and "uv sync" in args]
    assert syncs, "the image is not installed with uv sync"
    assert all("--frozen" in args and "--no-dev" in args for args in syncs)


def test_dockerfile_runs_kindsync_as_a_non_root_user() -> None:
    final = _final_stage()
    users = [args for op, args in final if op == "USER"]
    assert users, "the image runs as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    (entrypoint,) = [json.loads(args) for op, args in final if op == "ENTRYPOINT"]
    assert entrypoint == ["kindsync"]
    (cmd,) = [json.loads(args) for op, args in final if op == "CMD"]
    assert _kindsync(cmd).command == "run"


def test_dockerfile_listens_where_compose_and_kubernetes_expect() -> None:
    """HOST=0.0.0.0 (the default 127.0.0.1 is unreachable from outside a container) and one port everywhere."""
    final = _final_stage()
    env = dict(item.split("=", 1) for op, args in final if op == "ENV" for item in args.split())
    assert env["HOST"] == "0.0.0.0"  # noqa: S104 (the point: inside a container)
    exposed = {int(port.split("/")[0]) for op, args in final if op == "EXPOSE" for port in args.split()}
    compose_port = int(_services()["api"]["ports"][0].rsplit(":", 1)[1])
    k8s_port = _container_ports(_container(_manifest("Deployment", "kindsync-api")))["http"]
    assert int(env["PORT"]) == compose_port == k8s_port == int(_config()["PORT"])
    assert compose_port in exposed


def test_dockerfile_healthcheck_asks_healthz() -> None:
    (check,) = [args for op, args in _final_stage() if op == "HEALTHCHECK"]
    assert "/healthz" in check


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    """The allow-list ignore file lets in every path the Dockerfile copies from the context."""
    ignore = [line.strip() for line in (INFRA / "Dockerfile.dockerignore").read_text().splitlines()]
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore, "the ignore file is not an allow-list: .venv, .git or .kindsync may reach the build"
    for op, args in _dockerfile():
        if op == "COPY" and "--from=" not in args:
            *sources, _ = [word for word in args.split() if not word.startswith("--")]
            for source in sources:
                assert source in allowed, f"COPY {source} is excluded from the build context"
