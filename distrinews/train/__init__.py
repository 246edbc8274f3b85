"""Stage `train` (`mlflow run . -e train`, `pipelines/train.py`): DDP fine-tuning. The loop
(`loop`), the model and a student's layers (`model`, `layer_selection`, `distillation`), a
warm start (`warm_start`), the process group (`distributed`), loaders, checkpoints,
evaluation and metrics, and what rank 0 logs (`tracking`, `logged_models`).

May import: `data`, the shared modules, `runtime`. Not the other stages.
"""
