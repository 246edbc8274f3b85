"""Bad input: one clear error line, a non-zero exit, a FAILED run, nothing half-written."""

import pandas as pd
import pytest

from devkit.mlflow_store import MlflowStore
from devkit.processes import processes_mentioning

pytestmark = pytest.mark.timeout(300)


def data_folder(root, name: str, train: pd.DataFrame | None):
    folder = root / name
    folder.mkdir()
    good = pd.DataFrame({"text": ["stocks rally", "team wins"], "label": ["Business", "Sports"]})
    good.to_parquet(folder / "test.parquet")
    if train is not None:
        train.to_parquet(folder / "train.parquet")
    return folder


#: Where bad input is caught, each is a unit test (test_splits, test_data_labels,
#: test_model, test_distributed): a UserError with its message. One launch proves
#: the path every such error takes to the user, here from inside the ranks' common
#: loading step on 2 processes: one line, a FAILED run tagged with it, nothing written.
CASES = {
    "test label never seen in train": (
        lambda root: {
            "data": data_folder(
                root, "d", pd.DataFrame({"text": ["x", "y"], "label": ["World", "Sports"]})
            )
        },
        "label(s) ['Business'] that never occur in train",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_cleanly(case, tmp_path, tiny_bert, small_data):
    make_params, message = CASES[case]
    store = MlflowStore(tmp_path)
    experiment_id = store.experiment("bad")
    output_dir = tmp_path / "checkpoints"
    params = {
        "nproc": 2,
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
