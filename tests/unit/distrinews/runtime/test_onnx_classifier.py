"""The ONNX classifier the server runs: its tokenizer pads to the batch, not to a fixed size."""

import json
import shutil

import numpy as np
import pytest

from distrinews.runtime.onnx_classifier import SPINNING, OnnxClassifier


def test_a_tokenizer_with_fixed_padding_is_not_padded(tiny_onnx, tmp_path, texts):
    """The packaged MiniLM's tokenizer.json pads every text to 128 tokens; serving must not."""
    padded = tmp_path / "model"
    shutil.copytree(tiny_onnx, padded)
    tokenizer_json = json.loads((padded / "tokenizer.json").read_text())
    tokenizer_json["padding"] = {
        "strategy": {"Fixed": 128},
        "direction": "Right",
        "pad_to_multiple_of": None,
        "pad_id": 0,
        "pad_type_id": 0,
        "pad_token": "[PAD]",
    }
    (padded / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    classifier = OnnxClassifier(padded, threads=1)
    assert len(classifier.tokenizer.encode("stocks rally").ids) == 4  # [CLS] stocks rally [SEP]
    reference = OnnxClassifier(tiny_onnx, threads=1)
    np.testing.assert_allclose(classifier.logits(texts[:4]), reference.logits(texts[:4]), rtol=1e-5)


@pytest.mark.parametrize("spinning", list(SPINNING))
def test_each_spinning_setting_gives_the_same_logits(tiny_onnx, spinning):
    texts = ["stocks fell sharply", "the team won the cup final"]
    reference = OnnxClassifier(tiny_onnx, threads=2, spinning="off").logits(texts)
    logits = OnnxClassifier(tiny_onnx, threads=2, spinning=spinning).logits(texts)
    np.testing.assert_array_equal(logits, reference)
