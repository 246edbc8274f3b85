"""How close the int8 graph runs to what this CPU can do: a roofline for batch-1 inference.

The model's int8 work per text is counted from its graph: each int8 weight matrix of
K x N (the MatMulInteger and QAttention nodes) costs 2 x K x N operations per token
(a multiply and an add); the attention products among tokens, in float, are a few
percent more and counted apart. What the CPU can do is measured, not assumed: ONNX
Runtime's own u8s8 MatMulInteger kernel on a large product (its best case) and on the
model's shapes at the texts' typical token count, on 1 and 2 threads. The model itself
is timed on the same texts (ONNX Runtime alone, batch 1). The ratio says how much a
faster graph could still gain: a model at 80% of its kernels' speed has at most 1.25x
left, whatever the graph.

    python -m benchmarks.roofline --model <int8 folder> [--texts 300]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from benchmarks.common import DATA, REPO, ag_news_test_texts, record
from distrinews.runtime.cpu import available_cpus
from distrinews.runtime.onnx_classifier import SPINNING, OnnxClassifier

INT8_OPS = ("MatMulInteger", "QAttention")


def int8_weights(model: onnx.ModelProto) -> list[tuple[int, int]]:
    """(K, N) of every int8 weight matrix the graph multiplies each token by."""
    initializers = {i.name: i for i in model.graph.initializer}
    shapes = []
    for node in model.graph.node:
        if node.op_type not in INT8_OPS:
            continue
        for name in node.input:
            tensor = initializers.get(name)
            if (
                tensor is not None
                and tensor.data_type == TensorProto.INT8
                and len(tensor.dims) == 2
            ):
                shapes.append(tuple(tensor.dims))
    return shapes


def attention_layers(model: onnx.ModelProto) -> int:
    return sum(n.op_type == "QAttention" for n in model.graph.node)


def matmul_session(m: int, k: int, n: int, threads: int) -> tuple[ort.InferenceSession, dict]:
    """ONNX Runtime's u8s8 MatMulInteger of (m x k) by a constant (k x n), and its input."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.integers(-127, 127, (k, n), dtype=np.int8), "b")
    zero = numpy_helper.from_array(np.array(0, dtype=np.uint8), "a_zero")
    node = helper.make_node("MatMulInteger", ["a", "b", "a_zero"], ["y"])
    graph = helper.make_graph(
        [node],
        "matmul",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])],
        [weight, zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # As the served model runs (DISTRINEWS_SPINNING=inference): with ONNX Runtime's
    # default, each of these sessions' threads would spin after its run, beside the next.
    for key, value in zip(
        ("session.intra_op.allow_spinning", "session.force_spinning_stop"),
        SPINNING["inference"],
        strict=True,
    ):
        options.add_session_config_entry(key, value)
    session = ort.InferenceSession(model.SerializeToString(), options)
    return session, {"a": rng.integers(0, 255, (m, k), dtype=np.uint8)}


def gemm_gops(shapes: list[tuple[int, int, int]], threads: int, repeats: int) -> float:
    """Operations per second (G) of MatMulInteger over `shapes`, each run `repeats` times;
    the median of 5 passes."""
    sessions = [matmul_session(m, k, n, threads) for m, k, n in shapes]
    ops = 2 * sum(m * k * n for m, k, n in shapes) * repeats
    passes = []
    for _ in range(6):
        start = time.perf_counter()
        for _ in range(repeats):
            for session, feed in sessions:
                session.run(None, feed)
        passes.append(ops / (time.perf_counter() - start) / 1e9)
    return statistics.median(passes[1:])


def model_gops(folder: str, texts: list[str], threads: int, weights: list) -> tuple[float, float]:
    """Median ms of ONNX Runtime alone per text, batch 1, and the median G operations/s."""
    classifier = OnnxClassifier(folder, threads=threads, spinning="inference")
    encodings = classifier.encode(texts)
    for encoding in encodings[:10]:
        classifier.run_encoded([encoding])
    ms, rates = [], []
    for encoding in encodings:
        start = time.perf_counter()
        classifier.run_encoded([encoding])
        seconds = time.perf_counter() - start
        ms.append(1000 * seconds)
        rates.append(text_ops(len(encoding.ids), weights) / seconds / 1e9)
    return statistics.median(ms), statistics.median(rates)


def text_ops(tokens: int, weights: list[tuple[int, int]]) -> int:
    """int8 operations for a text of `tokens` tokens (the float attention products apart)."""
    return 2 * tokens * sum(k * n for k, n in weights)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="exported int8 ONNX folder")
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "roofline.md")
    args = parser.parse_args(argv)
    folder = Path(args.model)
    onnx_file = next(folder.glob("*.onnx"))
    graph = onnx.load(str(onnx_file))
    weights, layers = int8_weights(graph), attention_layers(graph)
    texts = ag_news_test_texts(args.data)[: args.texts]
    classifier = OnnxClassifier(folder, threads=1)
    tokens = int(statistics.median(len(e.ids) for e in classifier.encode(texts)))
    del classifier
    hidden = weights[0][0]
    attention = 2 * 2 * tokens * tokens * hidden * layers  # scores and context, float
    per_text = text_ops(tokens, weights)
    model_shapes = [(tokens, k, n) for k, n in weights]
    lines = [
        f"Model: {len(weights)} int8 weight matrices, {sum(k * n for k, n in weights) / 1e6:.1f} M "
        f"weights; a text of {tokens} tokens (the median of {len(texts)} AG News test texts) "
        f"costs **{per_text / 1e9:.2f} G int8 operations** (the pooler counted per token: "
        f"about 1% over), plus {attention / 1e6:.0f} M float ones in attention (not counted "
        "below). Rates are G operations per second, medians.",
        "",
        "| threads | MatMulInteger, 1024 x 1536 x 1536 (the kernel's best) | MatMulInteger at "
        "the model's shapes | the model, batch 1 (ONNX Runtime alone) | model ms per text "
        "| model / best kernel | model / kernel at its shapes |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    metrics = {"int8_gops_per_text": per_text / 1e9}
    for threads in sorted({1, available_cpus()}):
        best = gemm_gops([(1024, 1536, 1536)], threads, 3)
        shaped = gemm_gops(model_shapes, threads, 5)
        ms, model = model_gops(str(folder), texts, threads, weights)
        lines.append(
            f"| {threads} | {best:.0f} | {shaped:.0f} | {model:.0f} | {ms:.2f} | "
            f"{model / best:.0%} | {model / shaped:.0%} |"
        )
        metrics |= {f"model_share_of_kernel_{threads}t": model / shaped, f"model_ms_{threads}t": ms}
    record(
        "roofline",
        "Roofline: the int8 graph against this CPU's int8 kernels",
        "\n".join(lines) + "\n",
        args.output,
        metrics,
        experiment=args.experiment,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
