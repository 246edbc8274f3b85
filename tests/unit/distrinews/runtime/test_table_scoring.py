"""Scoring a column of values: every row answered in order, values that are not texts
answered with an error instead of failing the batch, the same answers however the rows
reach it."""

import numpy as np
import pandas as pd
import pytest

from distrinews.runtime.labels import LABELS
from distrinews.runtime.onnx_classifier import OnnxClassifier
from distrinews.runtime.table_scoring import (
    answer_columns,
    chunks,
    score_chunk,
    score_values,
    texts_of,
)
from distrinews.runtime.text_rules import text_problem


@pytest.fixture(scope="module")
def classifier(tiny_onnx) -> OnnxClassifier:
    return OnnxClassifier(tiny_onnx, threads=1)


def test_bad_values_get_an_empty_label_and_their_error(classifier):
    values = ["Stocks rallied", None, "  \n", 42, "x" * 30, float("nan"), pd.NA, "a\x00b", "Oil"]
    answers = score_chunk(classifier, values, max_chars=20)
    assert list(answers.columns) == answer_columns(LABELS)
    assert answers["error"].tolist() == [
        None,
        "missing text",
        "empty text",
        "not a string (int)",
        "text over 20 characters (30)",
        "missing text",
        "missing text",
        "text contains NUL",
        None,
    ]
    bad = answers["error"].notna()
    assert answers.loc[bad, "label"].eq("").all() and answers.loc[bad, "confidence"].isna().all()
    assert answers.loc[~bad, "label"].isin(LABELS).all()
    assert answers.loc[~bad, "confidence"].between(0.25, 1).all()


def test_scores_are_the_classifier_s_whatever_the_chunking(classifier, texts):
    values = [*texts[:30], None]
    answers = score_values(classifier, values)
    expected = classifier.probabilities(texts[:30])
    probabilities = answers[[f"prob_{label}" for label in LABELS]].to_numpy()
    np.testing.assert_allclose(probabilities[:30], expected, atol=1e-3)  # other batches: int8
    assert answers["label"].tolist()[:30] == [LABELS[i] for i in expected.argmax(axis=1)]
    assert answers["confidence"].to_numpy()[:30] == pytest.approx(expected.max(axis=1), abs=1e-3)
    assert answers["error"].tolist() == [None] * 30 + ["missing text"]
    # Chunk by chunk, or all at once in chunks: the same batches, the same answers.
    parts = [score_chunk(classifier, values[part]) for part in chunks(len(values), 1024)]
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), answers)


def test_an_empty_column_has_the_answer_columns(classifier):
    assert list(score_values(classifier, []).columns) == answer_columns(LABELS)


def test_values_come_from_a_list_series_or_frame():
    assert texts_of(["a", None]) == ["a", None]
    assert texts_of(pd.Series(["a", "b"])) == ["a", "b"]
    assert texts_of(pd.DataFrame({"text": ["a"], "id": [1]})) == ["a"]
    assert texts_of(pd.DataFrame({0: ["a"]})) == ["a"]
    assert texts_of("one text") == ["one text"]
    with pytest.raises(ValueError, match="needs a 'text' column"):
        texts_of(pd.DataFrame({"a": ["x"], "b": ["y"]}))


def test_chunks_cover_every_row_once():
    assert chunks(0, 4) == []
    assert chunks(9, 4) == [slice(0, 4), slice(4, 8), slice(8, 9)]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("Stocks rallied", None),
        ("\x1c", "empty text"),
        ("", "empty text"),
        ("a" * 5, "text over 4 characters (5)"),
        (b"bytes", "not a string (bytes)"),
        (None, "missing text"),
        (np.nan, "missing text"),
    ],
)
def test_the_rule_of_a_text(value, problem):
    assert text_problem(value, max_chars=4 if value == "a" * 5 else 100) == problem
