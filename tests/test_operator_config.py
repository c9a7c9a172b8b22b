"""The operator's files in config/: alert rules pass promtool and name only real metrics."""

from __future__ import annotations

import json
import re
import subprocess

from prometheus_client import Metric  # noqa: TID251 (reading our registry's families)

from tests.support import REPO
from tests.test_observability import promtool
from worker import metrics

RULES = REPO / "config/prometheus/rules.yml"
DASHBOARD = REPO / "config/grafana/dashboards/streaming-worker.json"
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created", "_info")


def exported_names() -> set[str]:
    families: list[Metric] = list(metrics.REGISTRY.collect())
    return {family.name for family in families}


def referenced(text: str) -> set[str]:
    """Metric family names in `text` (sample suffixes removed; recording rules have colons)."""
    return {_family(name) for name in re.findall(r"\bstreaming_worker_[a-z_]+", text)}


def _family(sample: str) -> str:
    for suffix in _SUFFIXES:
        sample = sample.removesuffix(suffix)
    return sample


def test_alert_rules_pass_promtool() -> None:
    checked = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_rules_and_dashboard_name_only_metrics_the_worker_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = " ".join(
        target["expr"] for panel in dashboard["panels"] for target in panel["targets"]
    )
    used = referenced(RULES.read_text()) | referenced(expressions)
    assert used, "the files should reference the worker's metrics"
    assert used - exported_names() == set()


def test_every_dashboard_panel_has_a_query_and_a_unit() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert len(dashboard["panels"]) >= 12
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
