"""A benchmark script run once as a test runs it: against a temp MLflow store, its table read
back row by row."""

import subprocess
import sys

from devkit.mlflow_store import MlflowStore
from devkit.processes import REPO


def run_benchmark(store: MlflowStore, script: str, *args: object) -> tuple[str, object]:
    """`python -m benchmarks.<script>` against `store`; its table and its MLflow run."""
    if store.client.get_experiment_by_name("bench") is None:
        store.experiment("bench")
    output = store.folder / f"{script}.md"
    command = [sys.executable, "-m", f"benchmarks.{script}", *map(str, args)]
    command += ["--experiment", "bench", "--output", str(output)]
    # Run from the temp folder (its mlruns/ stays there), the repository on the path.
    env = store.env | {"PYTHONPATH": str(REPO)}
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=600, cwd=store.folder
    )
    assert result.returncode == 0, result.stderr[-4000:]
    experiment_id = store.client.get_experiment_by_name("bench").experiment_id
    runs = store.client.search_runs([experiment_id], f"tags.benchmark = '{script}'")
    assert [r.info.status for r in runs[:1]] == ["FINISHED"]
    return output.read_text(), runs[0]


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    """Cells of the table rows whose first cell starts with `first_cell`."""
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith(f"| {first_cell}")
    ]
