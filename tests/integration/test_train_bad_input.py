"""Bad input: one clear error line, a non-zero exit, a FAILED run, nothing half-written."""

import pandas as pd
import pytest

from devkit.mlflow_store import MlflowStore
from devkit.processes import processes_mentioning
from distrinews.runtime.cpu import available_cpus

pytestmark = pytest.mark.timeout(300)


def data_folder(root, name: str, train: pd.DataFrame | None):
    folder = root / name
    folder.mkdir()
    good = pd.DataFrame({"text": ["stocks rally", "team wins"], "label": ["Business", "Sports"]})
    good.to_parquet(folder / "test.parquet")
    if train is not None:
        train.to_parquet(folder / "train.parquet")
    return folder


#: One case per place bad input is caught (data, model, machine). Every data
#: check (columns, empty split, label range, ...) is tested in tests/unit/distrinews/
#: (test_splits.py, test_data_labels.py); it reaches the user through the same path
#: as the two data cases here.
CASES = {
    "missing data folder": (lambda root: {"data": root / "no-such-folder"}, "does not exist"),
    "test label never seen in train": (
        lambda root: {
            "data": data_folder(
                root, "d", pd.DataFrame({"text": ["x", "y"], "label": ["World", "Sports"]})
            )
        },
        "label(s) ['Business'] that never occur in train",
    ),
    "model not loadable offline": (
        lambda root: {"model": "no-such-org/no-such-model"},
        "cannot load model 'no-such-org/no-such-model'",
    ),
    "more processes than cores": (
        lambda root: {"nproc": available_cpus() + 1},
        f"nproc={available_cpus() + 1} but only {available_cpus()} CPU core(s)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_cleanly(case, tmp_path, tiny_bert, small_data):
    make_params, message = CASES[case]
    store = MlflowStore(tmp_path)
    experiment_id = store.experiment("bad")
    output_dir = tmp_path / "checkpoints"
    params = {
        "nproc": 1,
        "model": tiny_bert,
        "data": small_data,
        "epochs": 1,
        "output_dir": output_dir,
    } | make_params(tmp_path)
    result = store.mlflow_run("train", "bad", params, timeout=300)
    assert result.returncode != 0
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, result.stderr[-3000:]
    assert message in error_lines[0]
    runs = store.runs(experiment_id)
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert message in runs[0].data.tags.get("error", "")
    assert not output_dir.exists(), "no checkpoint written"
    assert processes_mentioning(str(output_dir)) == []
