"""Stage `monitor` (`mlflow run . -e monitor`): a window of the prediction log against each
version's reference profile. Drift, live accuracy and the reasons to retrain (`drift`),
what the run logs (`report`), and the step (`step`).

May import: `data`, the shared modules, `runtime`. No torch.
"""
