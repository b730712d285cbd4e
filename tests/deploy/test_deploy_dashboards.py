"""Grafana panels, alert rules and the operations guide use only catalogued metric names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "molhpo.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
METRIC = re.compile(r"\b(?:molhpo_[a-z0-9_]+|process_[a-z_]+)\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def catalogue() -> dict[str, str]:
    """Exported metric name -> type, from deploy/metrics.yaml."""
    data = yaml.safe_load((DEPLOY / "metrics.yaml").read_text())
    return {m["name"]: m["type"] for service in data.values() for m in service}


def unknown_metrics(expr: str) -> set[str]:
    known = catalogue()
    bad = set()
    for name in METRIC.findall(expr):
        if name in known:
            continue
        base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
        if base is not None and known.get(base) == "histogram":
            continue
        bad.add(name)
    return bad


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows keep their panels inside
    return out


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (p["title"], t["expr"])
        for p in panels(dashboard)
        for t in p.get("targets", [])
        if "expr" in t
    ]


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_catalogue_parses_and_histograms_are_queried_by_series() -> None:
    known = catalogue()
    assert "molhpo_coordinator_queue_depth" in known
    assert unknown_metrics("rate(molhpo_trainer_epoch_seconds_bucket[5m])") == set()
    assert unknown_metrics("rate(molhpo_trainer_epochs_bucket[5m])") == {
        "molhpo_trainer_epochs_bucket"
    }
    assert unknown_metrics("molhpo_trainer_epochs") == {"molhpo_trainer_epochs"}


def test_dashboard_loads_with_its_identity_and_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "molhpo"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels(dashboard):
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p.get("targets"), p["title"]
            assert p.get("description"), p["title"]


@pytest.mark.parametrize(("title", "expr"), dashboard_exprs())
def test_dashboard_queries_use_catalogued_metrics(title: str, expr: str) -> None:
    assert METRIC.search(expr), f"{title}: no molhpo metric in {expr!r}"
    assert unknown_metrics(expr) == set(), title


def test_dashboard_covers_the_required_views() -> None:
    exprs = " ".join(e for _, e in dashboard_exprs())
    for needed in (
        "molhpo_trainer_epochs_total",
        "molhpo_trainer_samples_total",
        "molhpo_coordinator_trials_started_total",
        "molhpo_coordinator_trials_finished_total",
        "rate(molhpo_trainer_busy_seconds_total[5m]) / molhpo_trainer_slots",
        "molhpo_trainer_gpu_utilization_ratio",
        "molhpo_trainer_gpu_memory_used_bytes",
        "molhpo_coordinator_study_trials",
        "molhpo_coordinator_best_value",
        "molhpo_coordinator_decision_seconds_bucket",
        "molhpo_coordinator_dispatch_seconds_bucket",
        "molhpo_coordinator_ask_seconds_bucket",
        "molhpo_trainer_decision_wait_seconds_bucket",
        "molhpo_grpc_server_handling_seconds_bucket",
        "molhpo_coordinator_trainers_registered",
        "molhpo_coordinator_trainer_slots",
        "molhpo_coordinator_queue_depth",
        "molhpo_coordinator_trainers_lost_total",
        "molhpo_coordinator_reports_total",
    ):
        assert needed in exprs, needed


def test_provisioning_files_load() -> None:
    prov = DEPLOY / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yaml").read_text())
    assert ds["datasources"][0]["type"] == "prometheus"
    dash = yaml.safe_load((prov / "dashboards" / "molhpo.yaml").read_text())
    assert dash["providers"][0]["type"] == "file"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r.get("alert", "?"))
def test_alert_rules_use_catalogued_metrics(rule: dict[str, Any]) -> None:
    assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
    assert rule["alert"] and rule["labels"]["severity"] in {"info", "warning", "critical"}
    assert rule["annotations"]["summary"]
    assert METRIC.search(rule["expr"])
    assert unknown_metrics(rule["expr"]) == set()


def test_prometheus_config_loads_and_reads_the_alerts() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert "alerts.yaml" in config["rule_files"]
    assert {job["job_name"] for job in config["scrape_configs"]} >= {"molhpo"}


def test_operations_guide_lists_every_metric() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    for name in catalogue():
        assert f"`{name}`" in guide, name
    assert unknown_metrics(guide) == set()
    for title, _ in dashboard_exprs():
        assert title in guide, f"panel {title!r} is not explained in docs/operations.md"


def test_dashboard_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for p in json.loads(DASHBOARD.read_text())["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        cells = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & taken, f"{p['title']} overlaps another panel"
        taken |= cells
