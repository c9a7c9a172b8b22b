"""The ECS files, checked against AWS's own API schema (botocore's service models and its
parameter validator, offline) and against each other and the image.

Each file is the `--cli-input-json` of one call:

    aws ecs register-task-definition --cli-input-json file://config/ecs/task-definition.json
    aws ecs create-service --cli-input-json file://config/ecs/service.json
    aws application-autoscaling register-scalable-target \\
        --cli-input-json file://config/ecs/scalable-target.json
    aws application-autoscaling put-scaling-policy \\
        --cli-input-json file://config/ecs/scaling-policy.json
"""

from __future__ import annotations

import json
import re
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator

from tests.support import REPO

ECS = REPO / "config/ecs"
PROVIDER_VARIABLES = {
    "OPENAI_API_KEY",
    "GEMINI_API_KEY",
    "AZURE_API_KEY",
    "AZURE_API_BASE",
    "AZURE_API_VERSION",
}
SECRET_NAME = re.compile(r"(KEY|SECRET|PASSWORD|TOKEN|DATABASE_URL)", re.IGNORECASE)
CALLS = [
    ("ecs", "RegisterTaskDefinition", "task-definition.json"),
    ("ecs", "CreateService", "service.json"),
    ("application-autoscaling", "RegisterScalableTarget", "scalable-target.json"),
    ("application-autoscaling", "PutScalingPolicy", "scaling-policy.json"),
]


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ECS / name).read_text())
    return loaded


def containers() -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in load("task-definition.json")["containerDefinitions"]}


def env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("environment", [])}


@pytest.mark.parametrize(("service", "operation", "name"), CALLS)
def test_file_is_a_valid_request_of_its_api_call(service: str, operation: str, name: str) -> None:
    model = botocore.session.get_session().get_service_model(service)
    shape = model.operation_model(operation).input_shape
    report = ParamValidator().validate(load(name), shape)
    assert not report.has_errors(), report.generate_report()


def test_validator_catches_a_wrong_file() -> None:
    """The check above can fail: a misspelt key and a wrong type are reported."""
    model = botocore.session.get_session().get_service_model("ecs")
    shape = model.operation_model("RegisterTaskDefinition").input_shape
    task = load("task-definition.json")
    task["containerDefinitions"][1]["stopTimeOut"] = 30
    task["containerDefinitions"][1]["essential"] = "yes"
    report = ParamValidator().validate(task, shape).generate_report()
    assert "stopTimeOut" in report
    assert "essential" in report


def test_worker_starts_only_after_migrate_succeeded() -> None:
    by_name = containers()
    migrate, worker = by_name["migrate"], by_name["worker"]
    assert migrate["command"] == ["migrate"]
    assert migrate["essential"] is False  # it exits when done; the task goes on
    assert worker["essential"] is True
    assert worker["dependsOn"] == [{"containerName": "migrate", "condition": "SUCCESS"}]
    assert migrate["image"] == worker["image"]
    for container in (migrate, worker):
        secrets = {item["name"] for item in container["secrets"]}
        assert "DATABASE_URL" in secrets, container["name"]


def test_worker_gets_every_provider_variable_and_secrets_only_by_value_from() -> None:
    by_name = containers()
    worker = by_name["worker"]
    secrets = {item["name"]: item["valueFrom"] for item in worker["secrets"]}
    assert set(secrets) | set(env(worker)) >= PROVIDER_VARIABLES
    arn = re.compile(r"^arn:aws:(secretsmanager|ssm):[a-z0-9-]+:\d{12}:(secret|parameter)[:/]")
    for name, value_from in secrets.items():
        assert arn.match(value_from), (name, value_from)
    for container in by_name.values():
        plaintext = [name for name in env(container) if SECRET_NAME.search(name)]
        assert plaintext == [], container["name"]
    # Bedrock signs with the task role; no AWS keys in the task at all.
    assert load("task-definition.json")["taskRoleArn"].startswith("arn:aws:iam::")
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & (set(secrets) | set(env(worker)))


def test_stop_timeout_covers_the_grace_and_health_matches_the_image() -> None:
    task = load("task-definition.json")
    worker = containers()["worker"]
    grace_s = float(env(worker)["WORKER_SHUTDOWN_GRACE_S"])
    # SIGTERM, then the grace, then a few seconds to hand jobs back, before ECS's SIGKILL.
    assert worker["stopTimeout"] >= grace_s + 5
    assert worker["stopTimeout"] <= 120  # Fargate's maximum
    dockerfile = (REPO / "Dockerfile").read_text()
    [image_check] = re.findall(r"CMD (\[\"python\".*\])", dockerfile)
    assert worker["healthCheck"]["command"] == ["CMD", *json.loads(image_check)]
    assert env(worker)["WORKER_METRICS_PORT"] == "9100"
    assert worker["portMappings"][0]["containerPort"] == 9100
    assert (task["cpu"], task["memory"]) == ("1024", "2048")
    # Read-only root filesystem, as tests/deploy/test_image.py runs it; /tmp on task storage
    # (Fargate has no tmpfs).
    assert [volume["name"] for volume in task["volumes"]] == ["tmp"]
    for container in containers().values():
        assert container["readonlyRootFilesystem"] is True
        assert container["mountPoints"] == [
            {"sourceVolume": "tmp", "containerPath": "/tmp", "readOnly": False}  # noqa: S108
        ]
        assert container["logConfiguration"]["logDriver"] == "awslogs"


def test_service_and_scaling_name_the_same_cluster_service_and_queue() -> None:
    service = load("service.json")
    target = load("scalable-target.json")
    policy = load("scaling-policy.json")
    task = load("task-definition.json")
    resource = f"service/{service['cluster']}/{service['serviceName']}"
    assert service["taskDefinition"] == task["family"]
    # No inbound traffic: no load balancer, no public address; a bad deployment rolls back.
    assert "loadBalancers" not in service
    assert service["networkConfiguration"]["awsvpcConfiguration"]["assignPublicIp"] == "DISABLED"
    assert service["deploymentConfiguration"]["deploymentCircuitBreaker"]["rollback"] is True
    assert target["ResourceId"] == policy["ResourceId"] == resource
    assert target["ScalableDimension"] == policy["ScalableDimension"] == "ecs:service:DesiredCount"
    assert target["MinCapacity"] >= 1  # the metric divides by the running tasks
    assert target["MinCapacity"] <= service["desiredCount"] <= target["MaxCapacity"]

    config = policy["TargetTrackingScalingPolicyConfiguration"]
    metrics = {m["Id"]: m for m in config["CustomizedMetricSpecification"]["Metrics"]}
    [returned] = [m for m in metrics.values() if m["ReturnData"]]
    assert returned["Expression"] == "visible / tasks"
    assert set(re.findall(r"[a-z_]+", returned["Expression"])) <= set(metrics)
    visible = metrics["visible"]["MetricStat"]["Metric"]
    assert (visible["Namespace"], visible["MetricName"]) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
    )
    queue_url = env(containers()["worker"])["SQS_QUEUE_URL"]
    assert visible["Dimensions"] == [{"Name": "QueueName", "Value": queue_url.rsplit("/", 1)[1]}]
    tasks = metrics["tasks"]["MetricStat"]["Metric"]
    assert tasks["MetricName"] == "RunningTaskCount"
    assert {d["Name"]: d["Value"] for d in tasks["Dimensions"]} == {
        "ClusterName": service["cluster"],
        "ServiceName": service["serviceName"],
    }
    # The README's worked example: 16 jobs per task of ~20 s each, 30 s acceptable wait.
    assert config["TargetValue"] == 16 / 20 * 30
    assert config["ScaleInCooldown"] > config["ScaleOutCooldown"]
