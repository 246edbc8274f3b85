import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from distrinews.runtime.labels import LABELS
from distrinews.train.metrics import classification_metrics, confusion_matrix


def test_metrics_match_scikit_learn():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (500,), generator=generator)
    predictions = torch.where(
        torch.rand(500, generator=generator) < 0.7,
        labels,
        torch.randint(0, 4, (500,), generator=generator),
    )
    counts = confusion_matrix(labels, predictions, 4)
    assert counts.sum() == 500
    assert counts[1, 2] == ((labels == 1) & (predictions == 2)).sum()
    metrics = classification_metrics(counts, LABELS)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predictions))
    assert metrics["macro_f1"] == pytest.approx(f1_score(labels, predictions, average="macro"))
    per_class = f1_score(labels, predictions, average=None)
    assert metrics["f1_sci_tech"] == pytest.approx(per_class[3])
    assert metrics["f1_world"] == pytest.approx(per_class[0])


def test_summed_shards_equal_the_whole():
    labels = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0, 0])
    predictions = torch.tensor([0, 1, 1, 3, 2, 2, 1, 0, 3])
    whole = confusion_matrix(labels, predictions, 4)
    shards = confusion_matrix(labels[::2], predictions[::2], 4) + confusion_matrix(
        labels[1::2], predictions[1::2], 4
    )
    assert torch.equal(whole, shards)
