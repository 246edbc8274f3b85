"""The alert rules and the Grafana dashboard name only metrics a real server exports: every
`distrinews_*` name in their expressions is in a scrape of the server (in process, on a
profiled tiny model, after predictions and feedback)."""

import json
import re
from pathlib import Path

import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from serving.app import create_app
from serving.settings import Settings

SERVING = Path(__file__).parents[3] / "serving"
METRIC = re.compile(r"\bdistrinews_[a-z_]+")


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((SERVING / "prometheus" / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((SERVING / "grafana" / "distrinews.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_rules_and_dashboard_name_only_exported_metrics(tmp_path, tiny_onnx_profiled, texts):
    settings = Settings(
        model=str(tiny_onnx_profiled),
        threads=1,
        prediction_log=f"sqlite:///{tmp_path}/log.db",
        feedback_token="t",
    )
    with TestClient(create_app(settings)) as client:
        answer = client.post("/predict", json={"text": texts[0]})
        body = {"prediction_id": answer.json()["prediction_id"], "label": "World"}
        assert client.post("/feedback", json=body, headers={"Authorization": "Bearer t"}).is_success
        exported = {
            sample.name
            for family in text_string_to_metric_families(client.get("/metrics").text)
            for sample in family.samples
        }
    expressions = rule_expressions() + dashboard_expressions()
    assert len(rule_expressions()) == 9
    named = {name for expr in expressions for name in METRIC.findall(expr)}
    assert named - exported == set()
    assert {"distrinews_drift", "distrinews_live_accuracy", "distrinews_reloads_total"} <= named
    assert "distrinews_estimated_accuracy_low" in named  # beside live accuracy
