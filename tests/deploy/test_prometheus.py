"""A real Prometheus (Debian's server) scrapes a running worker with the committed scrape
config and rules; every Grafana panel's query returns data, and faults fire their alerts.

Test-time changes, made on copies: the scrape target is this test's worker instead of
Docker's DNS name `worker`, scrapes and rule evaluations run every second, Grafana's
`$__rate_interval` reads `1m`, and every alert's `for:` is 2 s instead of its 5 to 10 min. The
expressions are the committed ones, unchanged.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg  # noqa: TID251 (the tests read rows as the app's clients do)
import pytest
import yaml

from tests.conftest import StartWorker, chat, row
from tests.deploy.docker import script
from tests.support import REPO, Process, eventually, free_port, spawn
from tests.test_observability import get, started

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(300)]

PROMETHEUS_DIR = REPO / "config/prometheus"
DASHBOARD = REPO / "config/grafana/dashboards/streaming-worker.json"
TEST_FOR = "2s"


def prometheus_binary() -> Path:
    binary = REPO / ".tools/bin/prometheus"
    if not binary.exists():
        script("install-promtool")
    return binary


def derived_config(directory: Path, worker_port: int, prometheus_port: int) -> Path:
    """The committed prometheus.yml and rules.yml, pointed at this test's worker."""
    rules = yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert "for" in rule, rule["alert"]
                rule["for"] = TEST_FOR
    (directory / "rules.yml").write_text(yaml.safe_dump(rules))

    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]
    config["rule_files"] = [str(directory / "rules.yml")]
    targets = {
        "streaming-worker": f"127.0.0.1:{worker_port}",
        "prometheus": f"127.0.0.1:{prometheus_port}",
    }
    for job in config["scrape_configs"]:
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target, with Grafana's interval variable filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", "1m"))
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    async def query(self, promql: str) -> list[dict[str, Any]]:
        status, body = await get(f"{self.url}/api/v1/query?query={urllib.parse.quote(promql)}")
        assert status == 200, (promql, body)
        result: list[dict[str, Any]] = json.loads(body)["data"]["result"]
        return result

    async def alerts(self) -> list[dict[str, Any]]:
        status, body = await get(f"{self.url}/api/v1/alerts")
        assert status == 200, body
        alerts: list[dict[str, Any]] = json.loads(body)["data"]["alerts"]
        return alerts

    async def firing(self, name: str, timeout_s: float = 60) -> dict[str, Any]:
        async def fired() -> dict[str, Any] | None:
            for alert in await self.alerts():
                if alert["labels"]["alertname"] == name and alert["state"] == "firing":
                    return alert
            return None

        return await eventually(fired, timeout_s=timeout_s, interval_s=0.5, what=f"{name} firing")


@pytest.fixture
async def worker(start_worker: StartWorker) -> tuple[Process, int]:
    process = start_worker(WORKER_QUEUE_DEPTH_INTERVAL_S="0.5", WORKER_CONCURRENCY="4")
    return process, await started(process)


@pytest.fixture
async def prometheus(
    worker: tuple[Process, int], tmp_path: Path, logs_dir: Path
) -> AsyncIterator[Prometheus]:
    port = free_port()
    config = derived_config(tmp_path, worker[1], port)
    process = spawn(
        [
            str(prometheus_binary()),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        log_path=logs_dir / f"prometheus-{uuid.uuid4().hex[:8]}.log",
    )
    url = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        try:
            return (await get(url + "/-/ready"))[0] == 200
        except OSError:
            assert process.popen.poll() is None, process.output
            return False

    await eventually(ready, timeout_s=30, what="Prometheus ready")
    yield Prometheus(url)
    process.stop()


async def test_every_panel_has_data_and_faults_fire_their_alerts(
    prometheus: Prometheus,
    worker: tuple[Process, int],
    db: asyncpg.Connection,
    submit: Any,
    sqs: Any,
    queue_url: str,
) -> None:
    # Scraped once before the workload: a counter's first sample already holding the whole
    # workload would show no rate.
    async def scraped() -> bool:
        result = await prometheus.query('up{job="streaming-worker"} == 1')
        return bool(result)

    await eventually(scraped, timeout_s=30, interval_s=0.2, what="worker scraped")
    # A workload that moves every metric a panel shows: answers, a 429 retried, a stream
    # broken after text (restart), one auth failure, a poison message and one with no row.
    jobs = [
        await submit(chat(f"Panel {i} {uuid.uuid4()} [[sim tokens=30 tps=30]]")) for i in range(16)
    ]
    jobs.append(
        await submit(chat(f"Busy {uuid.uuid4()} [[sim status=429 times=1 retry_after=0.1]]"))
    )
    jobs.append(await submit(chat(f"Flaky {uuid.uuid4()} [[sim drop_after=5 times=1 tps=50]]")))
    jobs.append(await submit(chat(f"Refused {uuid.uuid4()} [[sim status=401]]")))
    await asyncio.to_thread(sqs.send_message, QueueUrl=queue_url, MessageBody="garbage")
    await asyncio.to_thread(
        sqs.send_message, QueueUrl=queue_url, MessageBody=json.dumps({"jobId": str(uuid.uuid4())})
    )

    async def all_ended() -> bool:
        statuses = [(await row(db, job_id))["status"] for job_id in jobs]
        return all(status in ("completed", "failed") for status in statuses)

    await eventually(all_ended, timeout_s=90, what="every job ended")

    queries = panel_queries()
    empty: list[str] = []

    async def every_panel_has_data() -> bool:
        empty.clear()
        for title, promql in queries:
            result = await prometheus.query(promql)
            if not any(math.isfinite(float(series["value"][1])) for series in result):
                empty.append(f"{title}: {promql}")
        return not empty

    try:
        await eventually(every_panel_has_data, timeout_s=30, interval_s=1, what="panel data")
    except AssertionError:
        pytest.fail("panels without data:\n" + "\n".join(empty))

    # One failure among 18 jobs of the model is under the 10% threshold: nothing fires.
    names = {alert["labels"]["alertname"] for alert in await prometheus.alerts()}
    assert "StreamingWorkerHighFailureRate" not in names

    # Jobs the app sent wrong are the app's to fix: a warning, never the failure-rate page.
    # The first one only creates its series (a rate needs two samples), the rest raise it.
    invalid = [await submit({"model": "sim-model", "messages": []})]
    rejected_series = 'streaming_worker_jobs_finished_total{error_code="invalid_request"}'

    async def series_scraped() -> bool:
        return bool(await prometheus.query(rejected_series))

    await eventually(series_scraped, timeout_s=60, interval_s=0.5, what="the rejected series")
    invalid += [await submit({"model": "sim-model", "messages": []}) for _ in range(3)]

    async def invalid_ended() -> bool:
        return all([(await row(db, job_id))["status"] == "failed" for job_id in invalid])

    await eventually(invalid_ended, timeout_s=60, what="the invalid jobs failed")
    rejected = await prometheus.firing("StreamingWorkerJobsRejected")
    assert rejected["labels"]["severity"] == "warn"
    paged = {
        alert["labels"].get("model")
        for alert in await prometheus.alerts()
        if alert["labels"]["alertname"] == "StreamingWorkerHighFailureRate"
    }
    assert paged == set()

    # Jobs failing `auth` (the key is wrong): the failure-rate alert fires for that model.
    for _ in range(6):
        jobs.append(await submit(chat(f"Refused {uuid.uuid4()} [[sim status=401]]")))
    await eventually(all_ended, timeout_s=60, what="the failing jobs ended")
    alert = await prometheus.firing("StreamingWorkerHighFailureRate")
    assert alert["labels"]["model"] == "sim-model"
    assert "sim-model" in alert["annotations"]["summary"]

    # The worker killed: its target goes down, and the worker-down alert fires.
    process, _ = worker
    process.popen.send_signal(signal.SIGKILL)
    await process.wait(10)
    alert = await prometheus.firing("StreamingWorkerDown")
    assert alert["labels"]["severity"] == "page"
    [up] = await prometheus.query('up{job="streaming-worker"}')
    assert up["value"][1] == "0"
