"""The promotion gate's decision, case by case (the full flow: integration/test_registry.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from devkit.mlflow_store import MlflowStore, register_folder, tracking_uri
from devkit.processes import REPO
from devkit.tiny_models import broken_copy
from distrinews.config import DataConfig, PromoteConfig
from distrinews.errors import UserError
from distrinews.promotion import Score, decide, judge, run_promote

VERSIONS = {"candidate": "3", "champion": "2"}


def test_the_first_champion_only_needs_the_latency_budget():
    first = {"candidate": "1"}
    promoted, reason = decide(PromoteConfig(max_p95_ms=10), Score(0.25, 9.0), None, first)
    assert promoted and "first champion" in reason
    promoted, reason = decide(PromoteConfig(max_p95_ms=10), Score(0.95, 11.0), None, first)
    assert not promoted and "over max_p95_ms=10" in reason
    # A champion that does not load is not scored, and the reason names it.
    promoted, reason = decide(PromoteConfig(max_p95_ms=10), Score(0.25, 9.0), None, VERSIONS)
    assert promoted and "the champion (version 2) does not load: replaced" in reason


@pytest.mark.parametrize(
    ("candidate", "limit", "promoted"),
    [(0.9100, 0.0, True), (0.9200, 0.0, True), (0.9099, 0.0, False), (0.9060, 0.5, True)],
)
def test_accuracy_may_drop_at_most_the_limit(candidate, limit, promoted):
    cfg = PromoteConfig(max_accuracy_drop=limit)
    decision, reason = decide(cfg, Score(candidate, 5.0), Score(0.9100), VERSIONS)
    assert decision is promoted, reason
    assert "version 2" in reason and ("points lower" in reason) is not promoted


@pytest.mark.parametrize(
    ("candidate", "limit", "promoted"),
    [(0.80, 0.0, True), (0.79, 0.0, False), (0.79, 1.0, True), (None, 0.0, True)],
)
def test_the_production_slice_is_gated_too(candidate, limit, promoted):
    """Better on test, worse on the traffic it serves: refused past its own limit."""
    cfg = PromoteConfig(max_production_drop=limit)
    better_on_test = Score(0.95, 5.0, production_accuracy=candidate)
    decision, reason = decide(cfg, better_on_test, Score(0.91, production_accuracy=0.80), VERSIONS)
    assert decision is promoted, reason
    assert ("production points lower" in reason) is not promoted
    assert ("production accuracy" in reason) is (candidate is not None)


def test_force_skips_the_accuracy_gate_but_not_the_latency_budget():
    worse, slow = Score(0.50, 5.0), Score(0.50, 50.0)
    assert decide(PromoteConfig(force=True), worse, Score(0.91), VERSIONS)[0]
    assert not decide(PromoteConfig(force=True), slow, Score(0.91), VERSIONS)[0]


BUDGET = PromoteConfig(max_p95_ms=10, max_budget_drop=1.0)


@pytest.mark.parametrize(
    ("candidate", "promoted", "why"),
    [
        (Score(0.905, 4.0), True, "the champion's p95 25.0 ms over it"),
        (Score(0.895, 4.0), False, "1.50 test points lower (max_budget_drop=1)"),
        (Score(0.905, 4.0, production_accuracy=0.79), False, "production points lower"),
    ],
)
def test_a_champion_over_the_budget_may_lose_to_a_faster_less_accurate_one(
    candidate, promoted, why
):
    """Timed on the serving CPU, the champion misses the budget: a candidate within it may
    be up to max_budget_drop points less accurate, on test and production alike."""
    slow_champion = Score(0.910, 25.0, production_accuracy=0.81)
    decision, reason = decide(BUDGET, candidate, slow_champion, VERSIONS)
    assert decision is promoted and why in reason, reason


def test_a_candidate_over_the_budget_is_refused_whatever_its_accuracy():
    for champion in (Score(0.50, 25.0), Score(0.50, 4.0)):
        decision, reason = decide(BUDGET, Score(0.99, 12.0), champion, VERSIONS)
        assert not decision and "over max_p95_ms=10, whatever its accuracy" in reason


def test_with_both_within_the_budget_the_usual_accuracy_gate_holds():
    """A champion that fits the budget is replaced only by one as accurate: speed alone
    does not buy accuracy points."""
    decision, reason = decide(BUDGET, Score(0.905, 2.0), Score(0.910, 9.0), VERSIONS)
    assert not decision and "(max_accuracy_drop=0)" in reason
    decision, reason = decide(BUDGET, Score(0.912, 9.5), Score(0.910, 2.0), VERSIONS)
    assert decision and "over it" not in reason


# --- The whole gate in process, against a real SQLite registry (no server needed). ---

NAME = "distrinews"


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    """An empty MLflow store and registry in `tmp_path`, as MLflow's fluent API sees it."""
    store = MlflowStore(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    with tracking_uri(store.uri):
        mlflow.set_experiment(experiment_id=store.experiment("promote"))
        yield store.client


def register(client: mlflow.MlflowClient, folder: Path) -> str:
    """`folder` registered as a new version of NAME; its number."""
    return register_folder(client, NAME, folder, "promote")


def promote_in_process(small_data: Path, version: str) -> str:
    cfg = PromoteConfig(version=version, latency_texts=5, max_p95_ms=1000)
    return run_promote(cfg, DataConfig(data=str(small_data), max_eval_rows=50))


def test_a_champion_that_no_longer_loads_is_replaced_and_the_tags_say_so(
    registry, tiny_onnx, small_data, tmp_path
):
    broken = register(registry, broken_copy(tiny_onnx, tmp_path, "corrupt onnx"))
    registry.set_registered_model_alias(NAME, "champion", broken)
    candidate = register(registry, tiny_onnx)

    message = promote_in_process(small_data, candidate)

    assert str(registry.get_model_version_by_alias(NAME, "champion").version) == candidate
    assert f"version {broken}) does not load: replaced" in message
    tags = registry.get_model_version(NAME, candidate).tags
    assert tags["promotion"] == "promoted" and tags["promotion_champion_version"] == broken
    run = registry.get_run(tags["promotion_run_id"])
    assert run.data.tags["decision"] == "promoted" and run.info.status == "FINISHED"


def test_a_promotion_that_loses_a_race_is_recorded_as_refused(
    registry, tiny_onnx, small_data, monkeypatch
):
    """Another promotion moves the alias while this one scores: the alias stays where
    the other put it, and this candidate is tagged refused, with why."""
    first, candidate, other = (register(registry, tiny_onnx) for _ in range(3))
    registry.set_registered_model_alias(NAME, "champion", first)

    def a_concurrent_promotion(*args, **kwargs):
        decision = judge(*args, **kwargs)
        registry.set_registered_model_alias(NAME, "champion", other)
        return decision

    monkeypatch.setattr("distrinews.promotion.judge", a_concurrent_promotion)
    with pytest.raises(UserError, match=f"moved to version {other} during this promotion"):
        promote_in_process(small_data, candidate)

    assert str(registry.get_model_version_by_alias(NAME, "champion").version) == other
    tags = registry.get_model_version(NAME, candidate).tags
    assert tags["promotion"] == "refused" and "run it again" in tags["promotion_reason"]
    run = registry.get_run(tags["promotion_run_id"])
    assert run.data.tags["decision"] == "refused" and run.info.status == "FAILED"


#: Runs the promote step in process, then reports its exit code and what got imported.
PROMOTE_AND_REPORT = """
import json, sys
from pipelines.promote import main
code = main(sys.argv[1:])
heavy = sorted({name.split(".")[0] for name in sys.modules} & {"torch", "transformers"})
print(json.dumps({"code": code, "heavy": heavy}))
"""


def with_production_slice(client: mlflow.MlflowClient, version: str, tmp_path: Path) -> None:
    """Give `version` a train run that held out a production slice (as train -P feedback= does)."""
    experiment = client.get_experiment_by_name("promote").experiment_id
    run_id = client.create_run(experiment, tags={"step": "train"}).info.run_id
    folder = tmp_path / "datasets"
    folder.mkdir()
    slice_ = pd.DataFrame(
        {"text": ["Stocks rally", "Team wins cup"], "label": ["Business", "Sports"]}
    )
    slice_.to_parquet(folder / "production.parquet")
    client.log_artifacts(run_id, str(folder), "datasets")
    client.log_param(run_id, "feedback", "sqlite:///predictions.db")
    client.set_terminated(run_id)
    client.set_model_version_tag(NAME, version, "source_run_id", run_id)


def test_promote_runs_without_importing_torch_or_transformers(
    registry, tiny_onnx, small_data, tmp_path
):
    """The gate scores through the server's runtime, on test and on the candidate's production
    slice: a machine without torch can promote."""
    version = register(registry, tiny_onnx)
    with_production_slice(registry, version, tmp_path)
    arguments = ["--data", str(small_data), "--version", version, "--max-eval-rows", "50"]
    arguments += ["--latency-texts", "5", "--max-p95-ms", "1000"]
    result = subprocess.run(
        [sys.executable, "-c", PROMOTE_AND_REPORT, *arguments],
        cwd=REPO,
        env=os.environ | {"MLFLOW_EXPERIMENT_NAME": "promote"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report == {"code": 0, "heavy": []}, result.stderr[-3000:]
    assert str(registry.get_model_version_by_alias(NAME, "champion").version) == version
    tags = registry.get_model_version(NAME, version).tags
    assert float(tags["promotion_candidate_production_accuracy"]) in (0.0, 0.5, 1.0)
    promote_run = registry.get_run(tags["promotion_run_id"])
    contexts = {t.value for d in promote_run.inputs.dataset_inputs for t in d.tags}
    assert {"test", "production"} <= contexts
