"""`mlflow run . -e monitor` as a user types it, on a prediction log a real app wrote."""

import pandas as pd
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import Settings


def test_the_monitor_step_reports_a_window_to_a_run(
    tmp_path, tiny_onnx_profiled, small_data, mlflow_store
):
    store = f"sqlite:///{tmp_path}/log.db"
    texts = pd.read_parquet(small_data / "test.parquet")["text"].tolist()[:50]
    settings = Settings(model=str(tiny_onnx_profiled), threads=1, prediction_log=store)
    with TestClient(create_app(settings)) as client:
        for text in texts:
            assert client.post("/predict", json={"text": text}).status_code == 200
    params = {"store": store, "since": "1h", "reference": tiny_onnx_profiled}
    result = mlflow_store.mlflow_run("monitor", "watch", params)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "50 predictions, 0 feedback items; version unregistered" in result.stdout
    experiment = mlflow_store.client.get_experiment_by_name("watch")
    (run,) = mlflow_store.runs(experiment.experiment_id)
    assert run.info.status == "FINISHED" and run.data.tags["step"] == "monitor"
    assert run.data.metrics["monitor/predictions"] == 50
    assert run.data.tags["retrain_recommended"] in ("true", "false")
    assert run.data.params["store"] == store and "window_start" in run.data.params
