"""int8 quantization presets per target: test accuracy against PyTorch fp32, batch-1 latency.

Quantizes one trained checkpoint three ways with the export step's own code
(ONNX export, O2 graph optimisation, dynamic quantization):
- avx512_vnni: unsigned activations, signed 8-bit weights (u8s8);
- avx2, this project's: u8s8 with weights in 7 bits (reduce_range), safe from
  VPMADDUBSW saturation on CPUs without VNNI, one scale per output channel;
- avx2, Optimum's preset: unsigned weights (u8u8).
Each model scores the whole test split; batch-1 latency in process (ONNX Runtime,
one thread per vCPU) alternates between the models in rounds.
Note: ONNX Runtime picks its kernels from the CPU it runs on; on a CPU with
VNNI every u8s8 model uses the VNNI kernel, whatever target it was built for.

    python -m benchmarks.quantization --run-id <train run>   (or --checkpoint <folder>)
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import DATA, REPO, percentiles, record
from distrinews.config import DataConfig, ExportConfig
from distrinews.data.splits import load_splits
from distrinews.export.checks import pytorch_logits
from distrinews.export.conversion import quantize_to_int8
from distrinews.export.step import resolve_checkpoint
from distrinews.runtime.cpu import available_cpus, cpu_flags
from distrinews.runtime.labels import class_names
from distrinews.runtime.onnx_classifier import OnnxClassifier
from distrinews.runtime.scoring import batch1_latency_ms, batched_predictions


def presets() -> dict[str, tuple[str, object]]:
    """Name: (target, Optimum QuantizationConfig or None for the project's own)."""
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    return {
        "avx512_vnni (u8s8)": ("avx512_vnni", None),
        "avx2 (u8s8, 7-bit per-channel weights; ours)": ("avx2", None),
        "avx2 (u8u8; Optimum's preset)": (
            "avx2",
            AutoQuantizationConfig.avx2(is_static=False, per_channel=False),
        ),
    }


def pytorch_accuracy(checkpoint: Path, texts: list[str], labels: np.ndarray, max_length: int):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from distrinews.train.model import match_inputs_to_model

    torch.set_num_threads(available_cpus())
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    match_inputs_to_model(tokenizer, model)
    predict = lambda batch: pytorch_logits(model, tokenizer, batch, max_length)  # noqa: E731
    return float((batched_predictions(predict, texts) == labels).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-id", default="", help="train run whose logged model is used")
    parser.add_argument("--checkpoint", default="", help="or a save_pretrained folder")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--latency-texts", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "quantization.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="quantization-") as work:
        work_dir = Path(work)
        cfg = ExportConfig(run_id=args.run_id, checkpoint=args.checkpoint)
        _, checkpoint, _ = resolve_checkpoint(cfg, work_dir)
        models = {
            name: OnnxClassifier(
                quantize_to_int8(checkpoint, work_dir / str(i), target, args.max_length, config)[1]
            )
            for i, (name, (target, config)) in enumerate(presets().items())
        }
        body, metrics = measure(checkpoint, models, args)
    record(
        "quantization",
        "int8 presets per target",
        body,
        args.output,
        metrics,
        experiment=args.experiment,
    )
    return 0


def measure(checkpoint: Path, models: dict[str, OnnxClassifier], args) -> tuple[str, dict]:
    first = next(iter(models.values()))
    config = {"id2label": {str(i): label for i, label in enumerate(first.labels)}}
    test = load_splits(
        DataConfig(data=args.data), seed=0, model_labels=class_names(config.get("id2label"))
    ).test
    texts, labels = test["text"].tolist(), test["label"].to_numpy()
    fp32 = pytorch_accuracy(checkpoint, texts, labels, args.max_length)
    accuracy = {
        name: float((batched_predictions(m.logits, texts) == labels).mean())
        for name, m in models.items()
    }
    sample = texts[: args.latency_texts]
    timings: dict[str, list[dict]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            batch1_latency_ms(model.logits, sample[:10])
            timings[name].append(percentiles(batch1_latency_ms(model.logits, sample)))
    vnni = "yes" if {"avx512_vnni", "amx_int8"} & cpu_flags() else "no"
    lines = [
        f"Test split: {len(texts)} texts; PyTorch fp32 accuracy **{fp32:.4f}**. Batch-1 "
        f"latency in process over {len(sample)} texts, medians of {args.rounds} rounds. This "
        f"CPU has VNNI: {vnni}.",
        "",
        "| preset | test accuracy | vs fp32 (points) | p50 ms | p95 ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    metrics = {"accuracy_pytorch_fp32": fp32}
    for name in models:
        p50 = statistics.median(t["p50"] for t in timings[name])
        p95 = statistics.median(t["p95"] for t in timings[name])
        drop = 100 * (accuracy[name] - fp32)
        lines.append(f"| {name} | {accuracy[name]:.4f} | {drop:+.2f} | {p50:.2f} | {p95:.2f} |")
        key = name.split(" (")[0] + ("_optimum" if "Optimum" in name else "")
        metrics |= {f"{key}_accuracy": accuracy[name], f"{key}_p95_ms": p95}
    return "\n".join(lines) + "\n", metrics


if __name__ == "__main__":
    sys.exit(main())
