"""Benchmarks are scripts, not tests: here each runs once on a tiny configuration.

Each must finish, write its table with every row filled, and log it to an
MLflow run tagged `benchmark`. Marked `bench`: not in the default run (`python -m pytest
-m bench` runs them, before measuring or after changing a benchmark).
"""

import json
import re

import pytest

from benchmarks.accuracy_trials import HEADER
from devkit.benchmark_runs import run_benchmark, table_rows
from devkit.mlflow_store import MlflowStore
from devkit.processes import SHARED_DATA

pytestmark = [pytest.mark.timeout(600), pytest.mark.bench]


def test_train_vs_trainer(tmp_path, tiny_bert, small_data):
    text, _ = run_benchmark(
        MlflowStore(tmp_path),
        "train_vs_trainer",
        *("--model", tiny_bert, "--data", small_data, "--rows", 64, "--eval-rows", 32),
        *("--batch-size", 8, "--rounds", 1, "--trainers", "dynamic"),
    )
    ours = table_rows(text, "ours")
    trainer = table_rows(text, "Trainer")
    assert len(ours) == 2 and [row[0] for row in trainer] == ["Trainer, dynamic padding"]
    assert [row[1] for row in ours] == ["4", "8"], "2 processes take half the steps"
    assert {row[1] for row in trainer} == {"8"}
    for row in ours + trainer:
        assert float(row[2]) > 0 and float(row[5]) > 0, row  # samples/s, held-out loss


def test_ddp_scaling(tmp_path, tiny_bert, small_data):
    text, run = run_benchmark(
        MlflowStore(tmp_path),
        "ddp_scaling",
        *("--model", tiny_bert, "--data", small_data, "--rows", 64, "--rounds", 1),
        *("--skip", "threads"),  # a reference row, one launch: the figures do not use it
    )
    assert [row[0] for row in table_rows(text, "nproc=")] == [
        "nproc=1, 1 thread",
        "nproc=2, 1 thread each",
    ]
    (side_by_side,) = table_rows(text, "2 separate nproc=1")
    assert float(side_by_side[1]) > 0
    efficiency = float(re.search(r"\*\*([\d.]+)\*\*", text).group(1))
    assert efficiency > 0
    assert run.data.metrics["bench_scaling_efficiency"] == pytest.approx(efficiency, abs=0.005)
    ceiling = run.data.metrics["bench_samples_per_s_1x1_side_by_side"]
    assert run.data.metrics["bench_ddp_share_of_ceiling"] == pytest.approx(
        run.data.metrics["bench_samples_per_s_2x1"] / ceiling
    )


def test_accuracy(tmp_path, tiny_bert, small_data):
    text, run = run_benchmark(
        MlflowStore(tmp_path),
        "accuracy",
        *("--model", tiny_bert, "--data", small_data, "--epochs", 2, "--curve-rows", 100),
    )
    epochs = table_rows(text, "1 ") + table_rows(text, "2 ")
    assert len(epochs) == 2 and all(0 <= float(row[1]) <= 1 for row in epochs)
    curve = table_rows(text, "100 ") + table_rows(text, "760 ")
    assert len(curve) == 2, "2 curve points: 100 rows and all 760"
    artifacts = MlflowStore(tmp_path).client.list_artifacts(run.info.run_id, "benchmarks")
    assert "benchmarks/accuracy.png" in [a.path for a in artifacts]


def test_serving_latency(exported):
    store, _, folder, reference = exported
    text, _ = run_benchmark(
        store,
        "serving_latency",
        *("--model", folder, "--checkpoint", reference, "--model-avx2", folder),
        *("--data", SHARED_DATA),
        *("--texts", 10, "--clients", 4, "--requests", 20, "--rounds", 1),
    )
    target = json.loads((folder / "export_report.json").read_text())["target"]
    assert f"ONNX int8 server ({target} build), HTTP, 1 client" in text
    assert "ONNX int8 server (avx2 build), HTTP, 1 client" in text
    (default,) = table_rows(text, "default (spinning inference, no micro-batching)")
    assert float(default[1]) > 0 and default[4] == "0", "requests/s, and no failed request"


def test_serving_vs_mlflow(exported):
    store, train_run_id, folder, _ = exported
    text, _ = run_benchmark(
        store,
        "serving_vs_mlflow",
        *("--run-id", train_run_id, "--model", folder),
        *("--data", SHARED_DATA),
        *("--texts", 10, "--clients", 4, "--requests", 20, "--rounds", 1),
    )
    rows = table_rows(text, "mlflow models serve") + table_rows(text, "ours")
    assert len(rows) == 2
    assert [row[-1] for row in rows] == ["0", "0"], "no failed request on either server"


def test_time_breakdown(exported, tiny_bert, small_data):
    store, _, folder, _ = exported
    text, _ = run_benchmark(
        store,
        "time_breakdown",
        *("--model", folder, "--train-model", tiny_bert, "--data", small_data),
        *("--rows", 256, "--steps", 4, "--requests", 20),
    )
    parts = ("forward |", "backward |", "gradient all-reduce", "ONNX Runtime", "tokenization |")
    for part in parts:
        (row,) = table_rows(text, part)
        assert float(row[1]) >= 0, row
    shares = [int(row[2].rstrip("%")) for row in table_rows(text, "") if row[2].endswith("%")]
    assert 195 <= sum(shares) <= 205, "each table's shares add up to 100%"


def test_soak(exported):
    store, _, folder, _ = exported
    text, run = run_benchmark(
        store,
        "soak",
        *("--model", folder, "--data", SHARED_DATA),
        *("--seconds", 5, "--clients", 8),
    )
    (row,) = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert int(cells[0]) > 0 and cells[1] == "0", "requests served, none failed"
    ok, probes = map(int, cells[5].split("/"))
    assert ok == probes >= 5, "/health answered throughout"
    assert run.data.metrics["bench_soak_errors"] == 0


def test_accuracy_trials(tmp_path, tiny_bert, small_data):
    """One trial, its seed given twice: the same seed trains the same model (a spread of 0),
    and its row is added below the rows already in the table."""
    store = MlflowStore(tmp_path)
    earlier = "| earlier | `--lr 2e-4` | 42 | 0.9 ± 0.0 | 0.9 ± 0.0 | 1.0 | 2.0 | a CPU |\n"
    (store.folder / "accuracy_trials.md").write_text(HEADER + earlier)
    # The recipe settings a trial changes, through torchrun.
    flags = ("--model", tiny_bert, "--epochs", 1, "--max-train-rows", 96)
    flags += ("--head-lr", 1e-3, "--label-smoothing", 0.1, "--freeze-embeddings", "true")
    args = ("--name", "tiny", "--seeds", 1, 1, "--data", small_data, "--nproc", 1, *flags)
    text, run = run_benchmark(store, "accuracy_trials", *args)
    assert HEADER + earlier + "| tiny |" in text, "the new row goes below the earlier ones"
    (row,) = table_rows(text, "tiny")
    assert row[1].startswith(f"`--model {tiny_bert} --epochs 1") and row[2] == "1 1"
    assert 0 <= float(row[3].split(" ± ")[0]) <= 1 and float(row[6]) > 0
    assert row[3].endswith(" ± 0.0000") and row[4].endswith(" ± 0.0000"), "the same model"
    mean_test = float(row[4].split(" ± ")[0])
    assert run.data.metrics["bench_test_mean"] == pytest.approx(mean_test, abs=5e-5)


def test_alias_switch(tmp_path, tiny_bert, small_data):
    store = MlflowStore(tmp_path)
    args = ("--model", tiny_bert, "--data", small_data, "--seconds", 2, "--clients", 4)
    text, run = run_benchmark(store, "alias_switch", *args)
    rows = table_rows(text, "before") + table_rows(text, "switch") + table_rows(text, "after")
    assert len(rows) == 3 and all(int(row[1]) > 0 and row[2] == "0" for row in rows)
    assert run.data.metrics["bench_errors"] == 0
    assert 0 < run.data.metrics["bench_seconds_to_serve"] < 60


def test_neighbour(exported):
    store, _, folder, _ = exported
    args = ("--model", folder, "--data", SHARED_DATA, "--seconds", 1, "--rounds", 1)
    text, run = run_benchmark(store, "neighbour", *args, "--rate", 50)
    rows = {row[0]: row for row in table_rows(text, "")[1:]}
    assert {"no server", "idle, spinning on", "back to back, spinning off"} <= set(rows)
    assert float(rows["no server"][2]) == 1.0 and float(rows["back to back, spinning on"][3]) > 0
    assert run.data.metrics["bench_neighbour_share_idle_spinning_on"] > 0


def test_http_overhead(exported):
    store, _, folder, _ = exported
    args = ("--model", folder, "--data", SHARED_DATA, "--texts", 20, "--rounds", 1)
    text, run = run_benchmark(store, "http_overhead", *args)
    policies = table_rows(text, "off") + table_rows(text, "inference") + table_rows(text, "on")
    assert len(policies) == 3 and all(float(row[4]) > 0 for row in policies), "CPU per request"
    (onnx,) = table_rows(text, "ONNX Runtime")
    assert float(onnx[1]) > 0, "the server timed its model"
    assert "bench_tiny_gap_p50_ms" in run.data.metrics


def test_overload(exported):
    store, _, folder, _ = exported
    args = ("--model", folder, "--data", SHARED_DATA, "--rounds", 1, "--seconds", 1)
    text, run = run_benchmark(store, "overload", *args, "--bounds", 0, 1, "--connections", 20)
    unbounded, bounded = table_rows(text, "0 (no bound)") + table_rows(text, "1 ")
    assert unbounded[4] == "0.00" and float(bounded[4]) > 0, "429s only with a bound"
    assert unbounded[5] == bounded[5] == "0", "no error other than 429"
    assert run.data.metrics["bench_errors_bound_1"] == 0


def test_shadow(exported):
    store, _, folder, _ = exported
    args = ("--model", folder, "--data", SHARED_DATA, "--rounds", 1, "--seconds", 2)
    text, run = run_benchmark(store, "shadow", *args, "--shares", 0, 1, "--one-client", 50)
    baseline, shadowed = table_rows(text, "0 (no challenger)") + table_rows(text, "1 ")
    assert float(baseline[3]) == 1.0 and float(shadowed[3]) > 0
    assert float(shadowed[4]) + float(shadowed[5]) + float(shadowed[6]) > 0.5, shadowed
    assert run.data.metrics["bench_errors_1"] == 0 and run.data.metrics["bench_errors_0"] == 0


def test_accuracy_estimate(exported):
    store, _, folder, _ = exported
    args = ("--model", folder, "--data", SHARED_DATA, "--window", 60, "--windows", 2)
    text, run = run_benchmark(store, "accuracy_estimate", *args)
    rows = table_rows(text, "like the reference") + table_rows(text, "headlines only")
    assert all(0 <= float(row[1]) <= 1 and 0 <= float(row[2]) <= 1 for row in rows)
    assert all(row[5].endswith("/2") and row[7] in ("no", "**yes**") for row in rows)
    # The tiny export's validation split holds too few reference texts for the classifier.
    assert all(row[8].startswith("n/a") or 0 <= float(row[8]) <= 1 for row in rows)
    assert run.data.metrics["bench_scrape_ms"] > 0
    assert {f"bench_stream{i}_concept_shift" for i in range(6)} <= set(run.data.metrics)


def test_roofline(exported):
    store, _, folder, _ = exported
    text, run = run_benchmark(store, "roofline", "--model", folder, "--texts", 20)
    rows = table_rows(text, "1 ") + table_rows(text, "2 ")
    assert rows and all(float(cell.rstrip("%")) > 0 for row in rows for cell in row[1:])
    assert run.data.metrics["bench_int8_gops_per_text"] > 0


def test_quantization(exported, small_data):
    store, _, _, checkpoint = exported
    args = ("--checkpoint", checkpoint, "--data", small_data, "--max-length", 64)
    text, run = run_benchmark(store, "quantization", *args, "--latency-texts", 20, "--rounds", 1)
    rows = table_rows(text, "avx")
    assert [row[0].split(" (")[0] for row in rows] == ["avx512_vnni", "avx2", "avx2"]
    assert all(0 <= float(row[1]) <= 1 and float(row[4]) > 0 for row in rows)
    fp32 = run.data.metrics["bench_accuracy_pytorch_fp32"]
    assert float(rows[0][2]) == pytest.approx(100 * (float(rows[0][1]) - fp32), abs=0.01)


def test_monitoring(tmp_path, tiny_onnx_profiled):
    args = ("--model", tiny_onnx_profiled, "--data", SHARED_DATA, "--texts", 20, "--rounds", 2)
    args += ("--window", 50, "--clients", 4, "--requests", 40)
    text, run = run_benchmark(MlflowStore(tmp_path), "monitoring", *args)
    rounds = table_rows(text, "1 ") + table_rows(text, "2 ")
    assert len(rounds) == 2
    for _, on, off, difference in rounds:
        assert float(on) > 0 and float(off) > 0
        assert float(difference) == pytest.approx(float(on) - float(off), abs=0.002)
    assert run.data.metrics["bench_monitor_record_us"] > 0
    assert (
        run.data.metrics["bench_monitor_scrape_us"] > 0
        and run.data.metrics["bench_monitor_log_us"] > 0
    )
    assert run.data.metrics["bench_log_dropped_under_load"] == 0
    assert "4 concurrent clients, 40 requests on the monitored server" in text
    drift = {
        row[0]: [float(v) for v in row[1:]]
        for row in table_rows(text, "")
        if row[0].startswith(("test texts", "one class", "titles", "with characters"))
    }
    assert len(drift) == 4 and all(0 <= v <= 1 for values in drift.values() for v in values)
    unknown_share = 3
    assert drift["with characters outside the vocabulary"][unknown_share] > 0.5


def test_batch_predict(exported, tmp_path, small_data):
    store, _, folder, checkpoint = exported
    args = ("--model", folder, "--checkpoint", checkpoint, "--data", small_data, "--rounds", 1)
    text, run = run_benchmark(store, "batch_predict", *args)
    rows = table_rows(text, "predict step") + table_rows(text, "server") + table_rows(text, "Py")
    rows += table_rows(text, "Spark")
    assert len(rows) == 6 and all(float(row[1]) > 0 for row in rows)
    assert 0 <= run.data.metrics["bench_spark_label_agreement"] <= 1
    assert run.data.metrics["bench_step_vs_server"] > 0
