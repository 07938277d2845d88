"""deploy/prometheus and deploy/grafana: valid for promtool, every alert unit-tested both ways,
and nothing in them names a metric the platform does not export."""

from __future__ import annotations

import json
import re

import yaml

from kafka_saga.observation.metrics import Metrics
from tests.support.prometheus import DEPLOY, ROOT, promtool

GRAFANA = ROOT / "deploy" / "grafana" / "kafka-saga.json"


def exported_names() -> set[str]:
    """Every series name the platform's /metrics can hold (from the metric families' types)."""
    names: set[str] = set()
    for line in Metrics().prometheus().decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            if kind == "histogram":
                names |= {name + "_bucket", name + "_count", name + "_sum"}
            elif kind == "counter":
                names.add(name if name.endswith("_total") else name + "_total")
            else:
                names.add(name)
    return names


def test_promtool_accepts_the_scrape_config_and_the_rules():
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0 and "SUCCESS" in config.stdout, config.stdout + config.stderr
    rules = promtool("check", "rules", "rules.yml")
    assert rules.returncode == 0 and "SUCCESS: 8 rules found" in rules.stdout, rules.stdout + rules.stderr


def test_every_alert_fires_when_it_should_and_stays_silent_otherwise():
    alerts = [r["alert"] for g in yaml.safe_load((DEPLOY / "rules.yml").read_text())["groups"]
              for r in g["rules"]]
    cases = [case for test in yaml.safe_load((DEPLOY / "rules.test.yml").read_text())["tests"]
             for case in test["alert_rule_test"]]
    for alert in alerts:
        assert any(c["alertname"] == alert and c["exp_alerts"] for c in cases), f"{alert} never fires"
        assert any(c["alertname"] == alert and not c["exp_alerts"] for c in cases), f"{alert} never silent"
    run = promtool("test", "rules", "rules.test.yml")
    assert run.returncode == 0 and "SUCCESS" in run.stdout, run.stdout + run.stderr


def test_rules_and_dashboard_name_only_metrics_the_platform_exports():
    exported = exported_names()
    assert {"kafka_saga_sagas_total", "kafka_saga_step_seconds_bucket", "kafka_saga_stalled"} <= exported
    rules = (DEPLOY / "rules.yml").read_text()
    dashboard = json.loads(GRAFANA.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    named = set(re.findall(r"kafka_saga_[a-z_]+", rules + "\n".join(exprs)))
    assert named, "no metric named at all"
    assert named <= exported, sorted(named - exported)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    # a panel on each thing an alert watches
    for metric in ("kafka_saga_sagas_total", "kafka_saga_step_seconds_bucket", "kafka_saga_consumer_lag",
                   "kafka_saga_dlq_total", "kafka_saga_breaker_state", "kafka_saga_stalled"):
        assert any(metric in e for e in exprs), metric
