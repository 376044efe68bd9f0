"""``deploy/monitoring``: the alert rules pass ``promtool`` (syntax and unit tests), and
every metric the rules and the dashboard use is one Portside exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from functional.client import RegistryClient
from functional.conftest import Deployment, unique_repo
from support.e2e import need_binary

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
METRICS_SOURCE = Path(__file__).resolve().parents[2] / "src" / "portside" / "services" / \
    "metrics.py"
#: Names in expressions that are not Portside's: Prometheus' own, and PromQL functions.
NOT_EXPORTED = {"up"}
_NAME = re.compile(r"\b((?:portside|quay|process)_[a-z0-9_]+|up)\b(?=\s*[{\[)]|\s*$|\s*[-/<>])")


def _rule_expressions() -> list[str]:
    import yaml

    rules = yaml.safe_load((MONITORING / "portside-alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_promtool_checks_and_unit_tests_pass() -> None:
    promtool = need_binary("promtool")
    for args in (["check", "rules", "portside-alerts.yml"],
                 ["test", "rules", "portside-alerts.test.yml"]):
        result = subprocess.run([promtool, *args], cwd=MONITORING, capture_output=True,
                                text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout + result.stderr


def test_every_metric_used_is_exported(registry: Deployment, alice: RegistryClient) -> None:
    alice.push_image(unique_repo("alice", "monitoring"), "v1")
    scraped = httpx.get(f"{registry.url}/metrics", timeout=30).text
    exported = {sample.name for family in text_string_to_metric_families(scraped)
                for sample in family.samples}
    exported |= {family.name for family in text_string_to_metric_families(scraped)}
    source = METRICS_SOURCE.read_text()
    used: set[str] = set()
    for expression in _rule_expressions() + _dashboard_expressions():
        names = set(_NAME.findall(expression))
        assert names, f"no metric found in {expression!r}"
        used |= names
    missing = set()
    for name in used - NOT_EXPORTED:
        # Some series appear only in some setups (TLS served, a finished GC pass, a
        # mirror synced): those must at least be defined by the metrics module.
        if name not in exported and f'"{name}"' not in source:
            missing.add(name)
    assert not missing, f"used but never exported: {sorted(missing)}"
    # The request and push figures are live on any server that served a push.
    for name in ("portside_http_requests_total", "portside_manifests_pushed_total",
                 "portside_http_request_duration_seconds_bucket", "quay_user_rows",
                 "process_resident_memory_bytes"):
        assert name in exported, name
