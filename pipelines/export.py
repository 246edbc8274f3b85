"""Export a trained model to an optimised, int8-quantized ONNX model, checked against PyTorch.

Launch:
    mlflow run . -e export --env-manager local -P data=../shared/data/ag_news
        [-P run_id=<train run>] [-P checkpoint=<folder>] [-P output=<folder>]
or directly:
    python -m pipelines.export --data ../shared/data/ag_news --output serving-model
"""

import sys

from distrinews.cli import parse_scoring_job
from distrinews.errors import run_reporting
from distrinews.export.step import run_export


def main(argv: list[str] | None = None) -> int:
    def export() -> str:
        cfg, data_cfg = parse_scoring_job("export", argv)
        report = run_export(cfg, data_cfg)
        summary = (
            f"accuracy: PyTorch fp32 {report['accuracy_pytorch_fp32']:.4f}, "
            f"ONNX fp32 {report['accuracy_onnx_fp32']:.4f}, "
            f"ONNX int8 {report['accuracy_onnx_int8']:.4f}; "
            f"int8 agrees with PyTorch on {report['int8_agreement_with_pytorch']:.2%}; "
            f"batch-1 p50 {report['latency_p50_ms_pytorch_fp32']:.1f} ms -> "
            f"{report['latency_p50_ms_onnx_int8']:.1f} ms; "
            f"confidence calibrated: T={report['temperature']:.3f}, test ECE "
            f"{report['ece_test_uncalibrated']:.4f} -> {report['ece_test']:.4f}"
        )
        if "registered_version" in report:
            version = report["registered_version"]
            summary += f"\nregistered as version {version} of {cfg.registered_model}"
        return summary

    return run_reporting(export)


if __name__ == "__main__":
    sys.exit(main())
