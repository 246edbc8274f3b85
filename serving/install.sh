#!/bin/sh
# The server image's build steps as plain shell, so they run (and are tested)
# without Docker: the Dockerfile runs this script, tests/integration/test_image.py runs
# it in a fresh virtual environment.
#
#   serving/install.sh <project folder> <exported model folder> <destination for the model>
set -eu
project=$1
model=$2
destination=$3

# The serve extra only: ONNX Runtime, FastAPI, uvicorn; no torch. The Dockerfile sets
# PIP_NO_CACHE_DIR, so the image keeps no pip cache; elsewhere (the tests) pip's cache
# serves the wheels it already holds.
python -m pip install "${project}[serve]"

if [ -z "$(ls -A "$model" 2>/dev/null)" ]; then
    echo "no model in '$model': set DISTRINEWS_MODEL to an MLflow URI when starting the server"
else
    for needed in config.json tokenizer.json; do
        [ -f "$model/$needed" ] || { echo "error: $model lacks $needed; export with 'mlflow run . -e export -P output=$model'" >&2; exit 2; }
    done
    mkdir -p "$destination"
    cp "$model"/*.onnx "$model"/*.json "$destination"/
fi
