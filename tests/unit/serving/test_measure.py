"""`python -m serving.measure`: a model timed on this CPU as the server runs it."""

import json

import pytest
from tokenizers import Tokenizer

from serving.inference import texts_like
from serving.measure import main


def test_the_texts_have_the_token_counts_of_the_reference_profile(tiny_onnx_profiled):
    profile = json.loads((tiny_onnx_profiled / "reference_profile.json").read_text())
    tokenizer = Tokenizer.from_file(str(tiny_onnx_profiled / "tokenizer.json"))
    tokenizer.no_padding()  # the file may pad to a fixed length; the server does not
    texts = texts_like(profile, 400)
    counts = [len(tokenizer.encode(t).ids) for t in texts]
    edges = profile["token_length_edges"]
    for b, share in enumerate(profile["token_length"]):
        inside = sum(edges[b] <= c < edges[b + 1] for c in counts) / len(counts)
        assert inside == pytest.approx(share, abs=0.08), (edges[b], share, inside)
    assert texts_like(None, 3) == texts_like(None, 3) and len(texts_like(None, 3)) == 3


def test_it_prints_the_cpu_and_percentiles_and_fails_over_a_budget(tiny_onnx_profiled, capsys):
    assert main(["--model", str(tiny_onnx_profiled), "--count", "30"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["texts"] == 30 and 0 < result["p50_ms"] <= result["p95_ms"]
    assert "vCPUs" in result["cpu"]
    assert main(["--model", str(tiny_onnx_profiled), "--count", "30", "--max-p95-ms", "1e-6"]) == 1
    assert "is over 1e-06 ms on this CPU" in capsys.readouterr().err


def test_a_model_that_does_not_load_is_one_error_line(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "missing")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ")
