"""What a registered version says about itself: the export's evidence as tags and a description.

Export writes them when it registers a version; `promote` reads them (an
untrained head is refused) and so does anyone comparing versions in the UI.
"""

from typing import Any

#: Version tag set by export on a model whose head was never trained (exported to time it).
UNTRAINED = "untrained_head"


#: Export report figures copied onto a registered version, as tag name: report key.
VERSION_EVIDENCE = {
    "test_accuracy_fp32": "accuracy_pytorch_fp32",
    "test_accuracy_int8": "accuracy_onnx_int8",
    "int8_agreement": "int8_agreement_with_pytorch",
    "latency_p50_ms": "latency_p50_ms_onnx_int8",
    "latency_p95_ms": "latency_p95_ms_onnx_int8",
    "size_mb": "size_mb_onnx_int8",
    # Expected calibration error of the served confidence (temperature applied), on test.
    "ece": "ece_test",
    "temperature": "temperature",
}


def describe_version(name: str, version: str, report: dict[str, Any]) -> None:
    """Tags and a description on a registered version: where it came from, how it scored."""
    import mlflow

    client = mlflow.MlflowClient()
    tags = {tag: f"{report[key]:.4f}" for tag, key in VERSION_EVIDENCE.items()}
    tags |= {
        key: str(report[key])
        for key in (
            *("target", "source", "source_run_id", "export_run_id", "test_rows", UNTRAINED),
            *("latency_cpu", "layers"),
        )
        if report.get(key) is not None
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    description = (
        f"int8 ONNX ({report['target']}) of {report['source']}. Test accuracy "
        f"{report['accuracy_onnx_int8']:.4f} int8 vs {report['accuracy_pytorch_fp32']:.4f} "
        f"PyTorch fp32 ({report['int8_agreement_with_pytorch']:.2%} agreement) on "
        f"{report['test_rows']} rows; batch-1 p50 {report['latency_p50_ms_onnx_int8']:.1f} ms, "
        f"p95 {report['latency_p95_ms_onnx_int8']:.1f} ms on "
        f"{report.get('latency_cpu', 'the export machine')}; "
        f"{report.get('layers', '?')} encoder layers, {report['size_mb_onnx_int8']:.1f} MB; "
        f"confidence calibrated (T={report['temperature']:.3f}): test ECE "
        f"{report['ece_test']:.4f}, {report['ece_test_uncalibrated']:.4f} before."
    )
    client.update_model_version(name, version, description=description)
