"""A challenger beside the champion, in process: canary clients stay with one model, both
models' predictions of a request are logged under it, shadow work gives way to requests,
and the challenger's alias can come and go.

The app's lifespan and its alias follower run in process on an MLflow registry in a SQLite
file; requests go through the ASGI app with httpx.
"""

import asyncio
import re
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from devkit.mlflow_store import model_registry, register_folder
from devkit.tiny_models import export_tiny_onnx, make_tiny_model
from distrinews.runtime.model_source import ModelSource
from distrinews.runtime.prediction_store import CHALLENGER, CHAMPION, PREDICTIONS
from serving.app import create_app
from serving.inference import LoadedModel, MicroBatcher, load_model
from serving.settings import Settings

NAME = "rollout"
RELOAD_SECONDS = 0.05


@pytest.fixture(scope="module")
def other_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny model: other weights, so some of its labels differ from tiny_onnx's."""
    work = tmp_path_factory.mktemp("other-model")
    return export_tiny_onnx(make_tiny_model(work / "bert", seed=1), work)


def metric(text: str, name: str) -> float:
    """One sample's value in Prometheus text (`name` with its labels, as written)."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match[1])


async def until(condition, timeout: float = 30) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not reached in time")


@pytest.mark.timeout(120)
def test_a_canary_client_stays_with_one_model_and_a_request_logs_both_models(
    tmp_path: Path, tiny_onnx: Path, other_onnx: Path
):
    log = f"sqlite:///{tmp_path}/predictions.db"
    texts = [f"news {i} about markets and football and elections" for i in range(6)]
    with model_registry(tmp_path / "store", NAME) as store:
        client = store.client
        champion = register_folder(client, NAME, tiny_onnx, NAME)
        challenger = register_folder(client, NAME, other_onnx, NAME)
        client.set_registered_model_alias(NAME, "champion", champion)
        client.set_registered_model_alias(NAME, "challenger", challenger)
        settings = Settings(
            model=f"models:/{NAME}@champion",
            challenger=f"models:/{NAME}@challenger",
            canary_share=0.5,
            shadow_share=1.0,
            reload_seconds=RELOAD_SECONDS,
            threads=1,
            prediction_log=log,
        )

        async def scenario() -> tuple[dict, str, set]:
            app = create_app(settings)
            seen: dict[str, set[str]] = defaultdict(set)
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                    for round_ in range(3):
                        for key in range(24):
                            answer = await http.post(
                                "/predict",
                                json={"text": texts[(key + round_) % len(texts)]},
                                headers={"X-Client-Key": f"client-{key}"},
                            )
                            assert answer.status_code == 200
                            seen[f"client-{key}"].add(answer.headers["X-Model-Version"])
                            await asyncio.sleep(0.01)  # the shadow scoring ends meanwhile
                    metrics = (await http.get("/metrics")).text
                    # The challenger's alias removed: every client goes to the champion.
                    client.delete_registered_model_alias(NAME, "challenger")
                    await until(lambda: app.state.challenger is None)
                    after = set()
                    for key in range(24):
                        answer = await http.post(
                            "/predict",
                            json={"text": texts[0]},
                            headers={"X-Client-Key": f"client-{key}"},
                        )
                        after.add(answer.headers["X-Model-Version"])
            return seen, metrics, after

        seen, metrics, after = asyncio.run(scenario())

    assert all(len(versions) == 1 for versions in seen.values()), seen  # sticky
    canary = [key for key, versions in seen.items() if versions == {challenger}]
    assert 4 <= len(canary) <= 20, len(canary)  # about half of 24 keys
    assert after == {champion}
    scored = metric(metrics, 'distrinews_shadow_total{outcome="scored"}')
    assert scored >= 36 and metric(metrics, 'distrinews_shadow_total{outcome="failed"}') == 0
    assert metric(metrics, "distrinews_agreement_window") == scored
    assert 0 <= metric(metrics, "distrinews_agreement") <= 1
    served_by_challenger = 3 * len(canary)
    name = 'distrinews_role_predictions_total{role="challenger",served="true"}'
    assert metric(metrics, name) == served_by_challenger
    check_the_log(log, champion, challenger, scored)


def check_the_log(log: str, champion: str, challenger: str, scored: float) -> None:
    """One served row per request, by the model that answered it; the other model's row,
    where it scored the request, under the same prediction id with the other role."""
    engine = sa.create_engine(log)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(PREDICTIONS.c.prediction_id, PREDICTIONS.c.model_version)
            .add_columns(PREDICTIONS.c.role, PREDICTIONS.c.served, PREDICTIONS.c.inference_ms)
            .order_by(PREDICTIONS.c.id)
        ).all()
    engine.dispose()
    by_request = defaultdict(list)
    for row in rows:
        by_request[row.prediction_id].append(row)
    version_of = {CHAMPION: champion, CHALLENGER: challenger}
    shadow_rows = 0
    for request_rows in by_request.values():
        served = [r for r in request_rows if r.served]
        assert len(served) == 1
        for row in request_rows:
            assert row.model_version == version_of[row.role] and row.inference_ms > 0
        others = [r for r in request_rows if not r.served]
        assert len(others) <= 1 and all(r.role != served[0].role for r in others)
        shadow_rows += len(others)
    assert shadow_rows == scored


def loaded(folder: Path, version: str) -> LoadedModel:
    model = load_model(str(folder), threads=1, spinning="inference")
    return LoadedModel(model.classifier, ModelSource(str(folder), NAME, version), "now", {}, {})


@pytest.mark.timeout(60)
def test_a_request_stops_the_shadow_scoring_under_way(tiny_onnx: Path, other_onnx: Path):
    """A long shadow scoring (hundreds of texts) is stopped by the next request, which is
    answered; one that a request arrives before (within its grace) never starts."""
    outcomes: list[str] = []
    long_texts = [" ".join(["markets"] * 120)] * 400

    def done(outcome: str, scores: object) -> None:
        outcomes.append(outcome)

    async def scenario() -> int:
        batcher, challenger = MicroBatcher(loaded(tiny_onnx, "1"), 1, 0), loaded(other_onnx, "2")
        batcher.start()
        try:
            batcher.shadow(challenger, long_texts, done)
            await until(lambda: batcher.shadow_run is not None)  # it runs
            await asyncio.sleep(0.02)
            scores = await batcher.probabilities(["news"])
            await until(lambda: outcomes)
            batcher.shadow(challenger, ["x"], done)
            batcher.arrived()  # a request within the grace: it never starts
            await until(lambda: len(outcomes) == 2)
            return len(scores.rows)
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()) == 1
    assert outcomes == ["preempted", "dropped"]


def test_shares_without_a_challenger_and_a_challenger_without_shares_are_refused():
    with pytest.raises(ValidationError, match="DISTRINEWS_CHALLENGER is empty"):
        Settings(model="m", shadow_share=0.1)
    with pytest.raises(ValidationError, match="no request would reach it"):
        Settings(model="m", challenger="models:/m@challenger")
