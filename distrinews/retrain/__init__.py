"""Stage `retrain` (`mlflow run . -e retrain`): feedback to a gated new champion, one parent
run with monitor, train, export and promote child runs, each a process of its own
(`child_runs`). The workflow (`workflow`), what its run tells (`story`, `report`).

May import: `promote` (the champion's version), `data`, the shared modules, `runtime`. It
starts the other steps as processes, and imports none of them.
"""
