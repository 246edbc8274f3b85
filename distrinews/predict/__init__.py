"""Stage `predict` (`mlflow run . -e predict`): a file or folder of news scored by one
registered version. Inputs and whole-or-absent outputs (`files`), chunks on every CPU
(`scorer`), what was scored (`totals`), the MLflow run (`report`), and the step (`step`).

May import: `monitor` (the label-drift plot it shares), `data`, the shared modules,
`runtime`. No torch.
"""
