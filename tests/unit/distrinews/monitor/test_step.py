"""The monitor step in process: a real server's prediction log and feedback (SQLite), read
over a window, compared with the model's reference profile, reported to an MLflow run."""

from datetime import datetime, timedelta, timezone

import mlflow
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from devkit.mlflow_store import tracking_uri
from distrinews.config import MonitorConfig
from distrinews.data.labels import metric_safe
from distrinews.data.time_window import parse_window
from distrinews.errors import UserError
from distrinews.monitor.step import run_monitor
from distrinews.runtime.labels import LABELS
from pipelines.monitor import main
from serving.app import create_app
from serving.settings import Settings

TOKEN = {"Authorization": "Bearer t"}


def test_windows_from_spans_and_dates():
    end = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)
    assert parse_window("24h", end.isoformat()) == (end - timedelta(hours=24), end)
    assert parse_window("7d", "2026-11-30T12:00:00")[0] == end - timedelta(days=7)
    assert parse_window("2026-11-29", "2026-11-30")[0].tzinfo == timezone.utc
    for since, until in (("soon", ""), ("2026-12-01", "2026-11-30"), ("5y", "")):
        with pytest.raises(UserError):
            parse_window(since, until)


def serve_and_log(store: str, model, texts: list[str], feedback_labels: list[str]) -> None:
    """`texts` through a real app with the log on; feedback with the given labels."""
    settings = Settings(model=str(model), threads=1, prediction_log=store, feedback_token="t")
    with TestClient(create_app(settings)) as client:
        answers = [client.post("/predict", json={"text": text}) for text in texts]
        for answer, label in zip(answers, feedback_labels, strict=False):
            body = {"prediction_id": answer.json()["prediction_id"], "label": label}
            assert client.post("/feedback", json=body, headers=TOKEN).status_code == 200


def test_a_shifted_window_with_wrong_feedback_recommends_retraining(
    tmp_path, tiny_onnx_profiled, small_data, mlflow_store
):
    texts = pd.read_parquet(small_data / "test.parquet")["text"].tolist()
    store = f"sqlite:///{tmp_path}/log.db"
    shifted = [f"{text.split(' (')[0][:40]} ☃☃ ✈✈" for text in texts[:120]]
    serve_and_log(store, tiny_onnx_profiled, shifted, ["World"] * 60)
    cfg = MonitorConfig(store=store, since="1h", reference=str(tiny_onnx_profiled), min_feedback=50)
    with tracking_uri(mlflow_store.uri):
        mlflow.set_experiment("monitor")
        message = run_monitor(cfg)
    (run,) = mlflow_store.runs(mlflow_store.client.get_experiment_by_name("monitor").experiment_id)
    assert run.info.status == "FINISHED" and run.data.tags["step"] == "monitor"
    experiment = mlflow_store.client.get_experiment_by_name("monitor")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["retrain_recommended"] == "true" and "token_length drift" in tags["retrain_reason"]
    assert tags["model_version"] == "unregistered" and message.startswith("120 predictions")
    assert metrics["monitor/predictions"] == 120 and metrics["monitor/feedback_items"] == 60
    assert (
        metrics["monitor/drift_token_length"] > 0.5
        and metrics["monitor/p_value_token_length"] < 1e-6
    )
    # Feedback all "World": accuracy is the share of predictions that said World.
    assert 0 <= metrics["monitor/live_accuracy"] <= 1
    artifacts = {a.path for a in mlflow_store.client.list_artifacts(run.info.run_id, "monitor")}
    assert {
        "monitor/report.html",
        "monitor/token_length.png",
        "monitor/predicted_label.png",
    } <= artifacts
    report = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/monitor/report.html")
    assert "Retrain recommended" in report and "data:image/png;base64," in report


def test_a_window_like_the_reference_needs_no_retraining(
    tmp_path, tiny_onnx_profiled, small_data, mlflow_store
):
    texts = pd.read_parquet(small_data / "test.parquet")["text"].tolist()
    store = f"sqlite:///{tmp_path}/log.db"
    serve_and_log(store, tiny_onnx_profiled, texts[:150], [])
    cfg = MonitorConfig(store=store, since="1h", reference=str(tiny_onnx_profiled))
    with tracking_uri(mlflow_store.uri):
        mlflow.set_experiment("monitor")
        assert run_monitor(cfg).endswith("no retraining needed")


def test_an_empty_window_or_a_bad_store_is_one_line(tmp_path, tiny_onnx_profiled, capsys):
    store = f"sqlite:///{tmp_path}/log.db"
    serve_and_log(store, tiny_onnx_profiled, ["Stocks rose today"], [])
    capsys.readouterr()  # the server's own lines
    assert main(["--store", store, "--since", "2020-01-01", "--until", "2020-01-02"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: no predictions in") and "widen -P since=" in line
    assert main(["--store", "postgresql+psycopg://x@127.0.0.1:1/none"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: prediction log") and "-P store=" in line


def test_two_models_sharing_one_log_are_each_compared_with_their_own_profile(
    tmp_path, tiny_onnx_profiled, small_data, mlflow_store, monkeypatch
):
    """A champion and a student registered under another name, both version 1, write to
    one log: each is its own report, against its own profile, and the verdict is about the
    registered model asked for. The versions' downloads are deleted when it ends."""
    import json
    import shutil
    import tempfile

    from distrinews.runtime.pyfunc import log_onnx_model
    from distrinews.runtime.reference_profile import PROFILE_FILE

    student = shutil.copytree(tiny_onnx_profiled, tmp_path / "student")
    profile = json.loads((student / PROFILE_FILE).read_text())
    # The student's reference saw only long texts: the same window drifts far from it.
    profile["token_length"] = [0.0] * (len(profile["token_length"]) - 1) + [1.0]
    (student / PROFILE_FILE).write_text(json.dumps(profile))
    texts = pd.read_parquet(small_data / "test.parquet")["text"].tolist()
    store = f"sqlite:///{tmp_path}/log.db"
    with tracking_uri(mlflow_store.uri):
        mlflow.set_experiment("export")
        for folder, name in ((tiny_onnx_profiled, "news"), (student, "news-student")):
            with mlflow.start_run():
                log_onnx_model(folder, ["Stocks rallied."], name)
        serve_and_log(store, "models:/news/1", texts[:60], ["World"] * 10)
        serve_and_log(store, "models:/news-student/1", texts[60:150], [])
        mlflow.set_experiment("monitor")
        (tmp_path / "tmp").mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
        message = run_monitor(MonitorConfig(store=store, since="1h", registered_model="news"))
    assert list((tmp_path / "tmp").iterdir()) == []
    (run,) = mlflow_store.runs(mlflow_store.client.get_experiment_by_name("monitor").experiment_id)
    metrics, tags = run.data.metrics, run.data.tags
    assert message.startswith("150 predictions, 10 feedback items; news version 1")
    assert metrics["monitor/predictions"] == 60 and metrics["monitor/feedback_items"] == 10
    assert metrics["monitor/news_student/version_1/predictions"] == 90
    assert metrics["monitor/news_student/version_1/feedback_items"] == 0
    assert metrics["monitor/drift_token_length"] < 0.3
    assert metrics["monitor/news_student/version_1/drift_token_length"] > 0.5
    assert tags["registered_model"] == "news" and tags["retrain_recommended"] == "false"


def test_a_store_url_with_a_password_is_refused_and_env_is_the_way_in(
    tmp_path, tiny_onnx_profiled, mlflow_store, monkeypatch, capsys
):
    """MLflow records every -P value as a run param: a password there would be stored and
    shown. Refused in one line that does not repeat it; `-P store=env` reads the server's
    DISTRINEWS_PREDICTION_LOG instead, and the run's params say `env`."""
    assert main(["--store", "postgresql://logger:S3cretPW@127.0.0.1:1/log"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "carries a password" in line and "-P store=env" in line and "S3cretPW" not in line
    store = f"sqlite:///{tmp_path}/log.db"
    serve_and_log(store, tiny_onnx_profiled, ["Stocks rose today"] * 3, [])
    monkeypatch.setenv("DISTRINEWS_PREDICTION_LOG", store)
    with tracking_uri(mlflow_store.uri):
        mlflow.set_experiment("monitor")
        arguments = ["--store", "env", "--since", "1h", "--reference", str(tiny_onnx_profiled)]
        assert main(arguments) == 0
    (run,) = mlflow_store.runs(mlflow_store.client.get_experiment_by_name("monitor").experiment_id)
    assert run.data.params["store"] == "env" and run.data.metrics["monitor/predictions"] == 3


def test_a_challenger_in_shadow_is_compared_with_the_champion_on_the_same_texts(
    tmp_path, tiny_onnx_profiled, small_data
):
    """A real app serves version 1 with version 2 (the same model) in shadow; the monitor
    compares them on the texts both scored: they agree on every one, and on the labelled
    ones their live accuracies are equal."""
    import time

    from devkit.mlflow_store import model_registry, register_folder

    texts = pd.read_parquet(small_data / "test.parquet")["text"].tolist()[:40]
    store = f"sqlite:///{tmp_path}/log.db"
    with model_registry(tmp_path / "registry", "shadowed") as registry:
        for alias in ("champion", "challenger"):
            version = register_folder(registry.client, "shadowed", tiny_onnx_profiled, "shadowed")
            registry.client.set_registered_model_alias("shadowed", alias, version)
        settings = Settings(
            model="models:/shadowed@champion",
            challenger="models:/shadowed@challenger",
            shadow_share=1.0,
            threads=1,
            prediction_log=store,
            feedback_token="t",
        )
        with TestClient(create_app(settings)) as client:
            for i, text in enumerate(texts):
                answer = client.post("/predict", json={"text": text}).json()
                time.sleep(0.02)  # the shadow scoring ends before the next request
                if i < 30:
                    body = {"prediction_id": answer["prediction_id"], "label": "World"}
                    assert client.post("/feedback", json=body, headers=TOKEN).status_code == 200
        mlflow.set_experiment("monitor")
        message = run_monitor(MonitorConfig(store=store, since="1h", registered_model="shadowed"))
        (run,) = registry.runs(registry.client.get_experiment_by_name("monitor").experiment_id)
        report = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/monitor/report.html")
    metrics = run.data.metrics
    assert 30 <= metrics["monitor/challenger_2/texts"] <= 40
    assert metrics["monitor/challenger_2/agreement"] == 1.0
    assert metrics["monitor/challenger_2/agreement_low"] < 1.0  # an interval, not a point
    assert metrics["monitor/challenger_2/labelled"] >= 20
    champion = metrics["monitor/challenger_2/champion_live_accuracy"]
    assert champion == metrics["monitor/challenger_2/challenger_live_accuracy"]
    assert metrics["monitor/challenger_2/challenger_p95_ms"] > 0
    assert "Challenger version 2" in report and "agreement 1.0000" in message
    assert metrics["monitor/predictions"] == 40  # the served rows only


def test_feedback_below_the_estimate_is_flagged_as_concept_shift_and_no_labels_can_trigger(
    tmp_path, tiny_onnx_profiled, small_data, mlflow_store
):
    """Every label given says the model was wrong (as if the classes had been reassigned):
    live accuracy falls below the interval the confidences estimate for those predictions.
    Without feedback, an estimated accuracy under min_estimated_accuracy recommends a
    retrain on its own. The run charts both through the window and estimates each
    predicted label's share right."""
    texts = pd.read_parquet(small_data / "train.parquet")["text"].tolist()[:240]
    labelled, unlabelled = f"sqlite:///{tmp_path}/labelled.db", f"sqlite:///{tmp_path}/none.db"
    settings = {"model": str(tiny_onnx_profiled), "threads": 1, "feedback_token": "t"}
    with TestClient(create_app(Settings(prediction_log=labelled, **settings))) as client:
        for text in texts:
            answer = client.post("/predict", json={"text": text}).json()
            wrong = next(label for label in answer["probabilities"] if label != answer["label"])
            body = {"prediction_id": answer["prediction_id"], "label": wrong}
            assert client.post("/feedback", json=body, headers=TOKEN).status_code == 200
    serve_and_log(unlabelled, tiny_onnx_profiled, texts, [])
    common = {"since": "1h", "reference": str(tiny_onnx_profiled), "min_feedback": 50}
    with tracking_uri(mlflow_store.uri):
        mlflow.set_experiment("monitor")
        flagged = run_monitor(MonitorConfig(store=labelled, **common, min_live_accuracy=0))
        estimated = run_monitor(
            MonitorConfig(store=unlabelled, **common, min_estimated_accuracy=0.99)
        )
    assert "likely concept shift: live accuracy 0.000 is below the [" in flagged
    assert "estimated accuracy" in estimated and "< min_estimated_accuracy=0.99" in estimated
    runs = mlflow_store.runs(mlflow_store.client.get_experiment_by_name("monitor").experiment_id)
    by_store = {run.data.params["store"]: run for run in runs}
    metrics = by_store[labelled].data.metrics
    assert metrics["monitor/concept_shift"] == 1.0 and metrics["monitor/live_accuracy"] == 0.0
    assert 0 < metrics["monitor/estimated_accuracy_labelled_low"] <= 1
    report = mlflow.artifacts.load_text(
        f"{by_store[labelled].info.artifact_uri}/monitor/report.html"
    )
    assert "a likely concept shift" in report and "by predicted label" in report
    by_label = {f"monitor/estimated_accuracy_{metric_safe(label)}" for label in LABELS}
    assert by_label & set(metrics) and all(0 < metrics[k] <= 1 for k in by_label & set(metrics))
    artifacts = mlflow_store.client.list_artifacts(by_store[labelled].info.run_id, "monitor")
    assert "monitor/accuracy.png" in {a.path for a in artifacts}
    assert "alt='accuracy'" in report
    assert 0 < by_store[unlabelled].data.metrics["monitor/estimated_accuracy"] < 0.99


def test_headlines_in_the_log_are_told_from_the_reference_texts_and_can_trigger(
    tmp_path, tiny_onnx_profiled, small_data, mlflow_store
):
    """The version carries its reference texts (as export writes them); the server logs the
    window's texts; the monitor's domain classifier tells headlines from articles, says by
    which words, and with max_domain_auc and no feedback recommends a retrain."""
    import shutil

    from distrinews.runtime.reference_profile import write_reference_texts

    folder = shutil.copytree(tiny_onnx_profiled, tmp_path / "model")
    train = pd.read_parquet(small_data / "train.parquet")["text"].tolist()
    write_reference_texts(folder, train[:300])
    headlines = [" ".join(text.split()[:8]) for text in train[300:420]]
    store = f"sqlite:///{tmp_path}/log.db"
    settings = Settings(model=str(folder), threads=1, prediction_log=store, log_texts=True)
    with TestClient(create_app(settings)) as client:
        for text in headlines:
            assert client.post("/predict", json={"text": text}).status_code == 200
    cfg = MonitorConfig(store=store, since="1h", reference=str(folder), max_domain_auc=0.7)
    with tracking_uri(mlflow_store.uri):
        mlflow.set_experiment("monitor")
        message = run_monitor(cfg)
        (run,) = mlflow_store.runs(
            mlflow_store.client.get_experiment_by_name("monitor").experiment_id
        )
        drift = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/monitor/text_drift.json")
        report = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/monitor/report.html")
    assert run.data.metrics["monitor/domain_auc"] > 0.7 and drift["texts"] == 120
    assert "told from the reference's with ROC AUC" in message
    assert len(drift["examples"]) == 5 and all(e in headlines for e in drift["examples"])
    assert "What changed in the text" in report and drift["reference_words"][0] in report
