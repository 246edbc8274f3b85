"""The reference profile: histograms with their edges, computed as the server will see the
texts (truncation, unknown tokens), written and read back."""

import json

import numpy as np
import pytest

from distrinews.errors import ModelFolderError
from distrinews.runtime.onnx_classifier import OnnxClassifier
from distrinews.runtime.reference_profile import (
    PROFILE_FILE,
    build_profile,
    read_profile,
    shares,
    token_length_edges,
)


def test_shares_put_each_value_in_its_bin_and_the_top_edge_in_the_last():
    assert shares(np.array([0, 0.5, 0.99, 1.0]), (0.0, 0.5, 1.0)) == [0.25, 0.75]
    assert token_length_edges(64) == (0, 8, 16, 24, 32, 40, 48, 56, 65)


def test_profile_of_texts_with_truncation_and_unknown_tokens(tmp_path, tiny_onnx, texts):
    classifier = OnnxClassifier(tiny_onnx)  # max 64 tokens
    long_text = "markets " * 200  # truncated
    unknown = "☃☃☃ ☃☃☃ snow"  # two [UNK] words of three
    # Headlines well under 64 tokens.
    short = [text.split(" (")[0][:80] for text in texts[:8]]
    sample = [*short, long_text, unknown]
    train_labels = np.array([0, 0, 0, 1, 2, 3, 3, 3])
    profile = build_profile(classifier, sample, train_labels)
    assert profile.rows == 10 and profile.split == "validation" and profile.temperature == 1.0
    assert profile.class_prior == {
        "World": 0.375,
        "Sports": 0.125,
        "Business": 0.125,
        "Sci/Tech": 0.375,
    }
    for histogram in (profile.confidence, profile.token_length, profile.unknown_share):
        assert sum(histogram) == pytest.approx(1.0)
    assert sum(profile.predicted_labels.values()) == pytest.approx(1.0)
    assert profile.truncated_share == pytest.approx(0.1) and profile.token_length[-1] >= 0.1
    assert profile.unknown_share[0] <= 0.9, "the snowman text has unknown tokens"
    assert profile.unknown_token_share > 0
    profile.write(tmp_path)
    assert read_profile(tmp_path) == json.loads(json.dumps(profile.__dict__))


def test_a_folder_without_a_profile_has_none_and_a_bad_one_is_an_error(tmp_path):
    assert read_profile(tmp_path) is None
    for content in ("{", '{"rows": 3}'):
        (tmp_path / PROFILE_FILE).write_text(content)
        with pytest.raises(ModelFolderError, match="re-export"):
            read_profile(tmp_path)
