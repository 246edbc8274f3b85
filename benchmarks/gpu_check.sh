#!/usr/bin/env bash
# The GPU path in one go, on a machine with CUDA GPUs and this project installed
# (README's set-up command) with ../shared/data/ag_news beside it:
#   1. the gpu-marked tests (NCCL, bf16, CUDA RNG in checkpoints, export);
#   2. a short real training run on every GPU, and the export of its checkpoint;
#   3. the GPU scaling benchmark (1 GPU vs all);
#   4. the whole test suite (it must pass on any machine, GPU or not).
# Everything goes to $OUT (default gpu-check/); the summary is printed last.
#
#   bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check}
data=${DATA:-../shared/data/ag_news}
mkdir -p "$out"
export MLFLOW_TRACKING_URI="sqlite:///$PWD/$out/mlflow.db"
summary=()

step() {  # step NAME COMMAND...: run, log to $out/NAME.log, record pass/fail and time
    local name=$1 start=$SECONDS
    shift
    if "$@" >"$out/$name.log" 2>&1; then
        summary+=("PASS $name ($((SECONDS - start)) s)")
    else
        summary+=("FAIL $name ($((SECONDS - start)) s): see $out/$name.log")
    fi
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpus.csv" 2>&1
python -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.device_count())" \
    >"$out/torch.txt" 2>&1
step gpu_tests timeout 1800 python -m pytest -m gpu -v -p no:cacheprovider
step train timeout 1800 mlflow run . -e train --env-manager local --experiment-name gpu-check \
    -P nproc=auto -P data="$data" -P max_train_rows=4000 -P max_eval_rows=1000 -P epochs=1 \
    -P output_dir="$out/checkpoints"
step export timeout 1800 mlflow run . -e export --env-manager local --experiment-name gpu-check \
    -P checkpoint="$(echo "$out"/checkpoints/*/epoch-1)" -P data="$data" -P max_eval_rows=1000 \
    -P output="$out/onnx"
step ddp_scaling timeout 1800 python -m benchmarks.ddp_scaling --gpus --data "$data" \
    --rows 8000 --rounds 1 --output "$out/ddp_scaling_gpu.md"
step full_suite timeout 3600 python -m pytest -p no:cacheprovider

echo "== GPU check =="
cat "$out/gpus.csv" "$out/torch.txt"
printf '%s\n' "${summary[@]}"
grep -h -E "passed|failed" "$out/gpu_tests.log" "$out/full_suite.log" | tail -n 2
grep -h -E "^accuracy:" "$out/export.log"
[ -f "$out/ddp_scaling_gpu.md" ] && cat "$out/ddp_scaling_gpu.md"
! printf '%s\n' "${summary[@]}" | grep -q '^FAIL'
