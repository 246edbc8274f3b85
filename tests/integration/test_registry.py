"""From a trained model to the served one, against a real `mlflow server` on 127.0.0.1.

Export registers versions with their evidence; `promote` moves `champion` only
for a version that earns it; a server started from `models:/distrinews@champion`
follows the alias under 16 clients without failing a request; a worse or
broken version is refused and the alias or the served model stays.
"""

import json
import shutil
import time
from pathlib import Path

import httpx
import mlflow
import pytest
import torch

from devkit.mlflow_store import MlflowStore, register_folder, step_in_process, tracking_uri
from devkit.servers import (
    BackgroundLoad,
    MlflowServer,
    Server,
    free_port,
    served_version,
    wait_for_version,
)
from devkit.tiny_models import broken_copy
from distrinews.config import DataConfig, ExportConfig, PromoteConfig
from distrinews.errors import UserError
from distrinews.export.step import run_export
from distrinews.promote.gate import run_promote
from distrinews.runtime.model_source import ModelSource, local_model_folder
from distrinews.train.model import load_model_and_tokenizer

pytestmark = pytest.mark.timeout(900)

NAME = "distrinews"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    folder = tmp_path_factory.mktemp("registry")
    store = MlflowStore(folder)
    server = MlflowServer(folder, store.env)
    try:
        server.wait_ready(timeout=120)
        store.env["MLFLOW_TRACKING_URI"] = server.url
        yield store, server, mlflow.MlflowClient(server.url)
    finally:
        server.stop()


def export(store: MlflowStore, checkpoint: Path, data: Path):
    """`-P checkpoint=`: a tiny model's int8 loses more to rounding than a MiniLM's, so no
    export-time accuracy limit here; the promotion gate is what is tested."""
    params = {"checkpoint": checkpoint, "data": data, "latency_texts": 20, "max_eval_rows": 300}
    return store.mlflow_run("export", "registry", params | {"max_accuracy_drop": 100})


def promote(store: MlflowStore, data: Path, **params: object):
    return store.mlflow_run(
        "promote", "registry", {"data": data, "max_eval_rows": 300, "latency_texts": 20} | params
    )


def export_here(client: mlflow.MlflowClient, checkpoint: Path, data: Path) -> dict:
    """As `export`, in this process: the first export and promote run as `mlflow run`
    commands, the later ones call the same step functions here."""
    cfg = ExportConfig(checkpoint=str(checkpoint), latency_texts=20, max_accuracy_drop=100)
    with step_in_process(client.tracking_uri, "registry"):
        return run_export(cfg, DataConfig(data=str(data), max_eval_rows=300))


def promote_here(client: mlflow.MlflowClient, data: Path, **params: object) -> str:
    """As `promote`, in this process: what was done, or UserError. Timed beside the load
    clients' threads, latency is not gated here (the first promote and the unit tests are)."""
    with step_in_process(client.tracking_uri, "registry"):
        cfg = PromoteConfig(latency_texts=20, max_p95_ms=1000, **params)
        return run_promote(cfg, DataConfig(data=str(data), max_eval_rows=300))


def champion(client: mlflow.MlflowClient) -> str:
    return client.get_model_version_by_alias(NAME, "champion").version


def test_export_registers_promote_gates_and_the_server_follows(
    registry, exported, tiny_bert, tiny_onnx, small_data, texts, tmp_path
):
    store, _, client = registry
    trained = exported[3]  # the tiny model trained in the session's run
    result = export(store, trained, small_data)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "registered as version 1 of distrinews" in result.stdout
    check_version_evidence(client, client.get_model_version(NAME, "1"))

    # No champion yet: only the latency budget is checked.
    result = promote(store, small_data)
    assert result.returncode == 0, result.stderr[-3000:]
    assert champion(client) == "1" and "first champion" in result.stdout

    # No bound: every request of the 16 clients is admitted, and must be answered 200.
    server = Server(f"models:/{NAME}@champion", store.env, reload_seconds=0.5, max_queue=0)
    try:
        server.wait_ready()
        info = httpx.get(f"{server.url}/model").json()
        assert (info["registered_model"], info["version"], info["alias"]) == (NAME, "1", "champion")
        switch_under_load(server, trained, small_data, texts, client)
        refuse_a_worse_version(store, tiny_bert, small_data, client, tmp_path)
        refuse_other_labels(store, small_data, client, tmp_path)
        broken = refuse_a_broken_version(server, client, tiny_onnx, tmp_path)
        # Rollback, from a champion that no longer loads: replaced, and the tags say so.
        message = promote_here(client, small_data, version="1", force=True)
        assert champion(client) == "1"
        assert f"the champion (version {broken}) does not load: replaced" in message
        tags = client.get_model_version(NAME, "1").tags
        assert (tags["promotion"], tags["promotion_champion_version"]) == ("promoted", broken)
        wait_for_version(server.url, "1")
        keep_serving_without_the_tracking_server(registry, server, texts)
    finally:
        server.stop()


def check_version_evidence(client: mlflow.MlflowClient, version) -> None:
    for key in ("test_accuracy_fp32", "test_accuracy_int8", "int8_agreement", "latency_p95_ms"):
        assert 0 <= float(version.tags[key]) < (1.01 if "accuracy" in key else 1000), key
    assert version.tags["target"] in ("avx2", "avx512_vnni", "arm64")
    assert float(version.tags["size_mb"]) > 0 and version.tags["export_run_id"]
    assert "int8 ONNX" in version.description and "p95" in version.description
    with tracking_uri(client.tracking_uri):
        model = mlflow.pyfunc.load_model(f"models:/{NAME}/{version.version}")
        answers = model.predict(["Stocks rallied as oil prices fell."])
    assert answers["label"].tolist()[0] in ("World", "Sports", "Business", "Sci/Tech")
    assert answers["error"].isna().all()


def switch_under_load(server, trained, small_data, texts, client) -> None:
    """Version 2 (as good: the same model) is promoted while 16 clients send requests."""
    assert export_here(client, trained, small_data)["registered_version"] == 2
    with BackgroundLoad(server.url, texts, clients=16) as load:
        time.sleep(2)
        # The same model: it answers every test row alike, so it is shown at most 2 points
        # worse (not better: a limit of 0 would refuse it, as it should).
        promote_here(client, small_data, max_accuracy_drop=2)
        assert champion(client) == "2"
        wait_for_version(server.url, "2")
        time.sleep(2)
    statuses = [a.status for a in load.answers]
    assert len(statuses) > 100 and set(statuses) == {200}, sorted(set(statuses))
    assert "now serving version 2" in server.output()


def refuse_a_worse_version(store, tiny_bert, small_data, client, tmp_path) -> None:
    """A head that was never trained (chance accuracy): registered, refused by the gate."""
    torch.manual_seed(0)
    model, tokenizer = load_model_and_tokenizer(str(tiny_bert))
    model.save_pretrained(tmp_path / "random-head")  # a head, so export does not flag it
    tokenizer.save_pretrained(tmp_path / "random-head")
    assert export_here(client, tmp_path / "random-head", small_data)["registered_version"] == 3
    result = promote(store, small_data, version=3)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr[-3000:]
    assert "not promoted" in errors[0] and "paired rows" in errors[0] and "interval" in errors[0]
    assert champion(client) == "2"
    version = client.get_model_version(NAME, "3")
    assert (
        version.tags["promotion"] == "refused" and version.tags["promotion_champion_version"] == "2"
    )
    # Flagged as export flags an encoder exported to time it: refused before scoring.
    client.set_model_version_tag(NAME, "3", "untrained_head", "true")
    with pytest.raises(UserError, match="never trained"):
        promote_here(client, small_data, version="3")


def refuse_other_labels(store, small_data, client, tmp_path) -> None:
    """A version that names the classes otherwise: promote refuses it in one line."""
    with tracking_uri(client.tracking_uri):
        served = local_model_folder(ModelSource(f"models:/{NAME}/1"))
    folder = shutil.copytree(served, tmp_path / "other-labels")
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {i: f"topic {i}" for i in range(4)}
    config["label2id"] = {f"topic {i}": i for i in range(4)}
    (folder / "config.json").write_text(json.dumps(config))
    version = register_folder(client, NAME, folder, "registry")
    with pytest.raises(UserError, match="predicts topic 0"):
        promote_here(client, small_data, version=str(version), force=True)
    assert champion(client) == "2"


def refuse_a_broken_version(server, client, tiny_onnx, tmp_path) -> str:
    """The alias moved by hand to a version whose ONNX file is corrupt: the server keeps 2.
    Returns that version, still the champion."""
    version = register_folder(
        client, NAME, broken_copy(tiny_onnx, tmp_path, "corrupt onnx"), "registry"
    )
    client.set_registered_model_alias(NAME, "champion", version)
    deadline = time.monotonic() + 60
    while f"refused version {version}" not in server.output():
        assert time.monotonic() < deadline, server.output()[-3000:]
        time.sleep(0.2)
    assert served_version(server.url) == "2"
    assert httpx.post(f"{server.url}/predict", json={"text": "Oil up"}).status_code == 200
    return version


def keep_serving_without_the_tracking_server(registry, server, texts) -> None:
    """The tracking server goes away: reload checks fail, logged; requests still answered."""
    _, tracking, _ = registry
    tracking.stop()
    deadline = time.monotonic() + 90
    while "reload check failed" not in server.output():
        assert time.monotonic() < deadline, server.output()[-3000:]
        time.sleep(0.5)
    assert httpx.post(f"{server.url}/predict", json={"text": texts[0]}).status_code == 200


def test_unreachable_tracking_server_stops_the_server_at_start(texts):
    env = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}", "PATH": "/usr/bin:/bin"}
    started = time.monotonic()
    server = Server(f"models:/{NAME}@champion", env)
    try:
        server.process.wait(timeout=120)
    finally:
        server.stop()
    assert server.process.returncode != 0
    assert f"cannot resolve models:/{NAME}@champion" in server.output()
    assert time.monotonic() - started < 90


def test_promote_names_what_is_missing(mlflow_store, small_data):
    mlflow_store.experiment("registry")
    result = promote(mlflow_store, small_data, registered_model="nobody")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr[-3000:]
    assert "'nobody'" in errors[0] and "export a model first" in errors[0]
