"""Stage `export` (`mlflow run . -e export`): a trained run to an int8 ONNX model. The
conversion (`conversion`), its checks against PyTorch (`checks`), the temperature and the
reference profile fitted on held-out rows (`calibration`), and the step that logs and
registers it (`step`).

May import: `train` (to load the PyTorch model), `promote.evidence` (the tags a version
carries), `data`, the shared modules, `runtime`.
"""
