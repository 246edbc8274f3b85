"""Checkpoint -> ONNX (Optimum) -> graph-optimised -> dynamic int8 ONNX, per target CPU."""

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer


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
    # SkipLayerNormalization: ONNX Runtime's CPU kernel for it was several
    # times slower than Add + LayerNormalization (docs/performance.md, "ONNX
    # graph choices").
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


def describe_graph(target: str) -> str:
    """What the export makes for `target`, in words: the export run's `quantization` tag and
    the folder's report (the server's /model). Per-channel dynamic weights and static QDQ
    measured no faster on the project's CPUs (benchmarks/roofline.md, docs/performance.md)."""
    config = quantization_config(target)
    weights = "per-channel" if config.per_channel else "per-tensor"
    bits = ", 7-bit" if config.reduce_range else ""
    return f"dynamic int8 ({target}: {weights}{bits} weights; O2 fusions)"


def quantization_config(target: str) -> Any:
    """Dynamic int8 quantization for a CPU: int8 weights, activation ranges computed per
    batch at run time (no calibration data needed).

    Every x86 target gets unsigned activations and signed weights (u8s8), the
    product ONNX Runtime's fastest x86 kernels compute; Optimum's own avx2 preset
    uses unsigned weights (u8u8), whose kernel is much slower per text
    (benchmarks/quantization.md). Without VNNI, u8s8 products go through
    VPMADDUBSW, whose 16-bit sums can saturate, so avx2 weights keep to 7 bits
    (reduce_range, as ONNX Runtime's quantization guide advises); one scale per
    output channel wins back the accuracy that per-tensor 7-bit weights lose
    (the same table).
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
