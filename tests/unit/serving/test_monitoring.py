"""Drift and prediction metrics on /metrics, scraped and parsed: a stream like the reference
keeps the drift gauges low, a shifted one pushes them up, a model without a profile has
none. In process, on a tiny int8 model tiny_onnx_profiled here as export profiles."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from distrinews.runtime.reference_profile import js_distance
from serving.app import create_app
from serving.settings import Settings


@pytest.fixture(scope="module")
def test_texts(small_data: Path) -> list[str]:
    return pd.read_parquet(small_data / "test.parquet")["text"].tolist()


def scrape(client: TestClient) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
    }


def drift(samples: dict) -> dict[str, float]:
    return {
        dict(labels)["signal"]: v
        for (name, labels), v in samples.items()
        if name == "distrinews_drift"
    }


def send(client: TestClient, texts: list[str]) -> None:
    for start in range(0, len(texts), 8):
        response = client.post("/predict/batch", json={"texts": texts[start : start + 8]})
        assert response.status_code == 200, response.text


def test_drift_stays_low_for_texts_like_the_reference_and_rises_for_shifted_ones(
    tiny_onnx_profiled, test_texts
):
    settings = Settings(model=str(tiny_onnx_profiled), threads=1, drift_window=200)
    with TestClient(create_app(settings)) as client:
        assert drift(scrape(client)) == {}, "nothing predicted yet"
        send(client, test_texts[:200])  # real news, unseen, as the reference's
        samples = scrape(client)
        assert samples[("distrinews_drift_window_fill", ())] == 1.0
        alike = drift(samples)
        assert set(alike) == {"predicted_label", "confidence", "token_length", "unknown_share"}
        print(f"drift, texts like the reference: {alike}")
        assert max(alike.values()) < 0.2, alike
        # Headlines only, with characters the vocabulary lacks: shorter texts, more [UNK].
        shifted = [f"{text.split(' (')[0][:40]} ☃☃ ✈✈" for text in test_texts[:200]]
        send(client, shifted)  # fills the window: only shifted texts in it now
        after = drift(scrape(client))
        print(f"drift, shifted texts: {after}")
        assert after["token_length"] > 0.5 and after["unknown_share"] > 0.5, after
        # Every prediction counted by its label (the model's own label values).
        counted = {
            dict(labels)["label"]: v
            for (name, labels), v in scrape(client).items()
            if name == "distrinews_predictions_total"
        }
        assert set(counted) <= {"World", "Sports", "Business", "Sci/Tech"}
        assert sum(counted.values()) == 400
        means = scrape(client)
        reference = means[("distrinews_reference_confidence_mean", ())]
        assert (
            0.25 <= reference <= 1 and 0.25 <= means[("distrinews_window_confidence_mean", ())] <= 1
        )
        assert scrape(client)[("distrinews_prediction_confidence_count", ())] == 400


def test_a_model_without_a_profile_has_counts_but_no_drift(client, texts):
    send(client, texts[:8])
    samples = scrape(client)
    assert drift(samples) == {}
    assert samples[("distrinews_drift_window_fill", ())] > 0


def test_js_distance_by_hand():
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_distance([0.5, 0.5], [0.5, 0.5]) == 0.0
    # (1, 0) and (1/2, 1/2): their mean is (3/4, 1/4); KL of each from it, in bits.
    kl_p = np.log2(1 / 0.75)
    kl_q = 0.5 * np.log2(0.5 / 0.75) + 0.5 * np.log2(0.5 / 0.25)
    assert js_distance([1, 0], [0.5, 0.5]) == pytest.approx(np.sqrt((kl_p + kl_q) / 2))


def test_monitoring_off_leaves_only_the_request_metrics(tiny_onnx_profiled, texts):
    settings = Settings(model=str(tiny_onnx_profiled), threads=1, monitoring=False)
    with TestClient(create_app(settings)) as client:
        send(client, texts[:8])
        names = {name for name, _ in scrape(client)}
    assert "distrinews_requests_total" in names
    monitored = ("distrinews_drift", "distrinews_predictions", "distrinews_prediction_confidence")
    assert not {n for n in names if n.startswith(monitored)}


def test_the_estimated_accuracy_is_the_windows_confidence_through_the_versions_map(
    tmp_path, tiny_onnx, small_data
):
    """The gauge, scraped and parsed, is what distrinews.runtime.accuracy_estimate makes of
    the confidences the clients got and their texts' token counts, through the accuracy map
    the profile holds (fitted on labelled rows and their short copies, as export fits it)."""
    import shutil

    from distrinews.export.accuracy_map import fit_on_validation
    from distrinews.runtime.accuracy_estimate import estimate_accuracy
    from distrinews.runtime.onnx_classifier import OnnxClassifier
    from distrinews.runtime.reference_profile import build_profile, read_profile

    folder = shutil.copytree(tiny_onnx, tmp_path / "model")
    frame = pd.read_parquet(small_data / "train.parquet").iloc[400:800]
    labels, reference = frame["label"].to_numpy(), frame["text"].tolist()
    classifier = OnnxClassifier(folder)
    fitted = fit_on_validation(classifier, reference, labels, classifier.logits(reference))
    build_profile(classifier, reference, labels, accuracy_map=fitted).write(folder)
    accuracy_map = read_profile(folder)["accuracy_map"]
    assert len(accuracy_map["curves"]) == len(accuracy_map["token_edges"]) + 1 >= 4
    # Headlines, so the window's texts fall in several bands.
    texts = [
        " ".join(text.split()[: 6 + 4 * (i % 8)])
        for i, text in enumerate(pd.read_parquet(small_data / "test.parquet")["text"][:60])
    ]
    with TestClient(create_app(Settings(model=str(folder), threads=1))) as client:
        answers = [client.post("/predict", json={"text": text}).json() for text in texts]
        scraped = client.get("/metrics").text
    tokens = np.array([len(e.ids) for e in classifier.encode(texts)])
    confidence = np.array([a["confidence"] for a in answers])
    expected = estimate_accuracy(confidence, accuracy_map, tokens)
    assert expected.accuracy != estimate_accuracy(confidence, accuracy_map["curves"][-1]).accuracy
    samples = {
        sample.name: sample
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name.startswith("distrinews_estimated_accuracy")
        and sample.name != "distrinews_estimated_accuracy_by_class"
    }
    assert samples["distrinews_estimated_accuracy"].labels == {"model_version": "unregistered"}
    for suffix, value in (
        ("", expected.accuracy),
        ("_low", expected.low),
        ("_high", expected.high),
    ):
        assert abs(samples[f"distrinews_estimated_accuracy{suffix}"].value - value) < 1e-9
    assert expected.low < expected.accuracy < expected.high
    by_class = [
        sample.labels["label"]
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name == "distrinews_estimated_accuracy_by_class"
    ]
    assert set(by_class) == {a["label"] for a in answers}
