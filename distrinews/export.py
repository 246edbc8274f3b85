"""Checkpoint -> ONNX (Optimum) -> graph-optimised -> dynamic int8, checked against PyTorch.

The int8 model is only accepted if its test accuracy stays within
`max_accuracy_drop` points of the PyTorch model it came from.
"""

import json
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distrinews.config import DataConfig, ExportConfig
from distrinews.errors import UserError
from distrinews.logged_models import load_logged_model
from distrinews.mlflow_runs import log_new_params, log_split, step_run
from distrinews.model import load_model_and_tokenizer, match_inputs_to_model, resolve_model_path
from distrinews.registry import POINTS_TOLERANCE, UNTRAINED, describe_version
from distrinews.runtime.cpu import available_cpus, detect_target
from distrinews.runtime.labels import LABELS, labels_from_config
from distrinews.runtime.onnx_classifier import OnnxClassifier
from distrinews.runtime.pyfunc import log_onnx_model
from distrinews.runtime.scoring import batch1_latency_ms, batched_predictions, percentile
from distrinews.splits import load_splits


def quantize_to_int8(
    checkpoint: Path, work_dir: Path, target: str, max_length: int, quantization: Any = None
) -> tuple[Path, Path]:
    """Export, optimise and quantize; returns (fp32 ONNX folder, int8 ONNX folder).

    `quantization`: an Optimum QuantizationConfig instead of the target's own
    (benchmarks compare presets with it).
    """
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTOptimizer, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    fp32_dir, optimized_dir, int8_dir = (work_dir / n for n in ("fp32", "optimized", "int8"))
    ort_model = ORTModelForSequenceClassification.from_pretrained(checkpoint, export=True)
    ort_model.save_pretrained(fp32_dir)
    # O2: fused attention, GELU and LayerNorm kernels; exact on CPU (O3's
    # approximate GELU is not), so int8 is the only approximation made. Not
    # SkipLayerNormalization: ONNX Runtime 1.32's CPU kernel for it took 5x
    # as long as Add + LayerNormalization (105 vs 19 us at 52 x 384), 15-20%
    # of a MiniLM request.
    no_skip_layer_norm = AutoOptimizationConfig.O2(
        disable_skip_layer_norm_fusion=True, disable_bias_skip_layer_norm_fusion=True
    )
    ORTOptimizer.from_pretrained(ort_model).optimize(no_skip_layer_norm, save_dir=optimized_dir)
    quantization = quantization or quantization_config(target)
    type_float_matmul_outputs(optimized_dir / "model_optimized.onnx")
    quantizer = ORTQuantizer.from_pretrained(optimized_dir, file_name="model_optimized.onnx")
    quantizer.quantize(quantization_config=quantization, save_dir=int8_dir)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    tokenizer.model_max_length = max_length  # the server truncates where training did
    for folder in (fp32_dir, int8_dir):
        _keep_only_model_file(
            folder, "model_optimized_quantized.onnx" if folder == int8_dir else "model.onnx"
        )
        tokenizer.save_pretrained(folder)
        shutil.copy(checkpoint / "config.json", folder / "config.json")
    return fp32_dir, int8_dir


def quantization_config(target: str) -> Any:
    """Dynamic int8 quantization for a CPU: int8 weights, activation ranges computed per
    batch at run time (no calibration data needed).

    Every x86 target gets unsigned activations and signed weights (u8s8), the
    product ONNX Runtime's fastest x86 kernels compute. Optimum's own avx2 preset
    uses unsigned weights (u8u8), whose kernel took 2.1x as long per text on the
    Xeon here (benchmarks/quantization.md). Without VNNI, u8s8 products go through
    VPMADDUBSW, whose 16-bit sums can saturate, so avx2 weights keep to 7 bits
    (reduce_range, as ONNX Runtime's quantization guide advises); one scale per
    output channel wins back what the lost bit cost (7-bit per-tensor weights
    lost 0.51 points of test accuracy, per-channel ones none).
    """
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    if target == "arm64":
        return AutoQuantizationConfig.arm64(is_static=False, per_channel=False)
    if target == "avx512_vnni":
        return AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
    vnni = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)
    return replace(vnni, reduce_range=True)


def type_float_matmul_outputs(onnx_file: Path) -> None:
    """Declare the float32 type of MatMul outputs that shape inference leaves untyped.

    ONNX shape inference cannot see through ONNX Runtime's fused operators
    (Attention, SkipLayerNormalization: the com.microsoft domain), and the
    quantizer refuses a MatMul whose output type it does not know. In an fp32
    model every such output is float32. The names include the MatMul the
    dynamic quantizer makes of each Gemm (`<output>_MatMul`).
    """
    import onnx

    model = onnx.load(str(onnx_file))
    graph = model.graph
    known = {v.name: v for v in [*graph.value_info, *graph.input, *graph.output]}
    names = [out for node in graph.node if node.op_type == "MatMul" for out in node.output]
    names += [f"{node.output[0]}_MatMul" for node in graph.node if node.op_type == "Gemm"]
    for name in names:
        if name not in known:
            graph.value_info.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
        elif known[name].type.tensor_type.elem_type == onnx.TensorProto.UNDEFINED:
            known[name].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    onnx.save(model, str(onnx_file))


def _keep_only_model_file(folder: Path, name: str) -> None:
    for onnx_file in folder.glob("*.onnx"):
        if onnx_file.name != name:
            onnx_file.unlink()


def pytorch_logits(
    model: torch.nn.Module, tokenizer, texts: list[str], max_length: int
) -> np.ndarray:
    with torch.inference_mode():
        inputs = tokenizer(
            texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        return model(**inputs).logits.float().numpy()


def compare_with_pytorch(
    checkpoint: Path,
    fp32_dir: Path,
    int8_dir: Path,
    texts: list[str],
    labels: np.ndarray,
    latency_texts: int,
) -> dict[str, float]:
    """Accuracy of PyTorch fp32, ONNX fp32 and ONNX int8; int8 agreement; batch-1 latency."""
    threads = available_cpus()
    torch.set_num_threads(threads)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    match_inputs_to_model(tokenizer, model)
    fp32 = OnnxClassifier(fp32_dir, threads=threads)
    int8 = OnnxClassifier(int8_dir, threads=threads)

    def torch_predict(batch: list[str]) -> np.ndarray:
        return pytorch_logits(model, tokenizer, batch, int8.max_length)

    predictions = {
        "pytorch_fp32": batched_predictions(torch_predict, texts),
        "onnx_fp32": batched_predictions(fp32.logits, texts),
        "onnx_int8": batched_predictions(int8.logits, texts),
    }
    report = {f"accuracy_{name}": float((p == labels).mean()) for name, p in predictions.items()}
    report["int8_agreement_with_pytorch"] = float(
        (predictions["onnx_int8"] == predictions["pytorch_fp32"]).mean()
    )
    # Batch-1 latency in alternating blocks of texts, so machine noise hits
    # both models alike. Not text by text: torch's OpenMP threads spin for a
    # while after each call and would slow the ONNX Runtime call after them.
    sample = texts[:latency_texts]
    torch_ms, int8_ms = [], []
    for start in range(0, len(sample), 25):
        block = sample[start : start + 25]
        torch_ms += batch1_latency_ms(torch_predict, block)
        int8_ms += batch1_latency_ms(int8.logits, block)
    for name, timings in (("pytorch_fp32", torch_ms), ("onnx_int8", int8_ms)):
        report[f"latency_p50_ms_{name}"] = percentile(timings, 50)
        report[f"latency_p95_ms_{name}"] = percentile(timings, 95)
    report["int8_speedup_p50"] = statistics.median(torch_ms) / statistics.median(int8_ms)
    report["size_mb_pytorch"] = _size_mb(checkpoint, "*.safetensors")
    report["size_mb_onnx_fp32"] = _size_mb(fp32_dir, "*.onnx")
    report["size_mb_onnx_int8"] = _size_mb(int8_dir, "*.onnx")
    return report


def _size_mb(folder: Path, pattern: str) -> float:
    return sum(f.stat().st_size for f in folder.glob(pattern)) / 2**20


def run_export(cfg: ExportConfig, data_cfg: DataConfig) -> dict[str, float]:
    """The export step: resolve the source, then export and check it in a run of its own."""
    target = detect_target() if cfg.target == "auto" else cfg.target
    if cfg.output:
        check_replaceable(Path(cfg.output))  # before the run: a refusal leaves nothing behind
    with tempfile.TemporaryDirectory(prefix="distrinews-export-") as work:
        work_dir = Path(work)
        source_run, checkpoint, untrained = resolve_checkpoint(cfg, work_dir)
        if source_run is not None:
            # Truncate as the model was trained.
            max_length = int(source_run.data.params.get("max_length", data_cfg.max_length))
            data_cfg = replace(data_cfg, max_length=max_length)
        source = source_run.info.run_name if source_run else Path(cfg.checkpoint).name
        with step_run("export", f"export {source} int8-{target}", source_run) as run:
            import mlflow

            mlflow.set_tags({"quantization": f"dynamic int8 ({target})"})
            if untrained:  # the registered version says so, and promote refuses it
                mlflow.set_tag(UNTRAINED, "true")
            int8_dir, report = export_and_check(cfg, data_cfg, checkpoint, target, work_dir)
            report["export_run_id"] = run.info.run_id
        if cfg.output:
            publish(int8_dir, Path(cfg.output))
    return report


REPORT = "export_report.json"


def check_replaceable(output: Path) -> None:
    """`output` may be written: new, empty, or an earlier export (which is replaced). A
    mistyped `-P output=` must not delete a folder of something else."""
    if output.is_file() or (
        output.is_dir() and any(output.iterdir()) and not (output / REPORT).is_file()
    ):
        raise UserError(
            f"output={output} exists and is not an exported model folder (no {REPORT}); "
            "pass a new folder, an empty one, or an earlier export's"
        )


def publish(folder: Path, output: Path) -> None:
    """Copy `folder` to `output` whole or not at all: a server started from `output` never
    finds half a model, even if the export is killed while copying."""
    staging = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    retired = output.with_name(f".{output.name}.old-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(folder, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if output.exists():
        os.replace(output, retired)
    os.replace(staging, output)
    shutil.rmtree(retired, ignore_errors=True)


def export_and_check(
    cfg: ExportConfig, data_cfg: DataConfig, checkpoint: Path, target: str, work_dir: Path
) -> tuple[Path, dict[str, float]]:
    """Quantize, score against PyTorch, log it all to the active run; fail on a large drop."""
    import mlflow

    config = json.loads((checkpoint / "config.json").read_text())
    test = load_splits(data_cfg, seed=0, model_labels=labels_from_config(config)).test
    log_split(test, data_cfg.data, "test")
    log_new_params(
        asdict(cfg)
        | {"resolved_target": target, "test_rows": len(test), "max_length": data_cfg.max_length}
    )
    fp32_dir, int8_dir = quantize_to_int8(
        checkpoint, work_dir / "onnx", target, data_cfg.max_length
    )
    texts, labels = test["text"].tolist(), test["label"].to_numpy()
    report = compare_with_pytorch(checkpoint, fp32_dir, int8_dir, texts, labels, cfg.latency_texts)
    drop_points = 100 * (report["accuracy_pytorch_fp32"] - report["accuracy_onnx_int8"])
    report["int8_accuracy_drop_points"] = drop_points
    mlflow.log_metrics({f"export/{key}": value for key, value in report.items()})
    run = mlflow.get_run(mlflow.active_run().info.run_id)
    evidence = {
        "target": target,
        "source": run.data.tags.get("source_run_name") or Path(cfg.checkpoint).name,
        "source_run_id": run.data.tags.get("source_run_id"),
        "export_run_id": run.info.run_id,
        "test_rows": len(test),
        UNTRAINED: run.data.tags.get(UNTRAINED),
    }
    (int8_dir / REPORT).write_text(json.dumps(evidence | report, indent=2))
    accepted = drop_points <= cfg.max_accuracy_drop + POINTS_TOLERANCE
    # A rejected model is still logged, to look into, but never registered.
    version = log_and_register(int8_dir, texts[:2], cfg.registered_model if accepted else "")
    if version:
        describe_version(cfg.registered_model, version, evidence | report)
        report["registered_version"] = int(version)
    if not accepted:
        raise UserError(
            f"int8 accuracy {report['accuracy_onnx_int8']:.4f} is {drop_points:.2f} points "
            f"below PyTorch's {report['accuracy_pytorch_fp32']:.4f} (limit "
            f"{cfg.max_accuracy_drop}); try another target or raise max_accuracy_drop"
        )
    return int8_dir, report


def log_and_register(int8_dir: Path, example_texts: list[str], registered_model: str) -> str:
    """Log the int8 folder as an MLflow model; its registered version ("" if not registered)."""
    info = log_onnx_model(int8_dir, example_texts, registered_model)
    return str(info.registered_model_version or "")


def resolve_checkpoint(cfg: ExportConfig, work_dir: Path) -> tuple[Any, Path, bool]:
    """(source MLflow run or None, a local save_pretrained folder, whether its head is new)."""
    if cfg.checkpoint:
        folder = Path(resolve_model_path(cfg.checkpoint))
        if not (folder / "config.json").is_file():
            raise UserError(
                f"checkpoint {folder} has no config.json; pass a save_pretrained folder"
            )
        architectures = json.loads((folder / "config.json").read_text()).get("architectures")
        if not any(a.endswith("ForSequenceClassification") for a in architectures or []):
            # A pretrained encoder (e.g. the untrained default model, to time
            # it): a seeded new head, saved, so ONNX and PyTorch share it.
            print(
                f"note: {folder} has no classification head; exporting it with a new, "
                f"untrained head for the {len(LABELS)} AG News topics (for timing; its "
                "accuracy means nothing)",
                file=sys.stderr,
            )
            torch.manual_seed(0)
            model, tokenizer = load_model_and_tokenizer(str(folder))
            folder = work_dir / "checkpoint"
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            return None, folder, True
        return None, folder, False
    model, tokenizer, run = load_logged_model(cfg.run_id or newest_finished_train_run())
    folder = work_dir / "checkpoint"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return run, folder, False


def newest_finished_train_run() -> str:
    import mlflow

    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string="tags.step = 'train' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    if not runs:
        raise UserError(
            f"no FINISHED train run in {mlflow.get_tracking_uri()}; train first, or pass "
            "-P run_id=... or -P checkpoint=<folder>"
        )
    return runs[0].info.run_id
