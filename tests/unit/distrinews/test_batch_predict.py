"""Which files a predict run scores, and how an input's own `label` column is kept."""

import pandas as pd
import pytest

from distrinews.batch_files import BatchFile, write_atomically
from distrinews.batch_predict import keep_clashing_columns, plan, score_files
from distrinews.config import PredictConfig
from distrinews.errors import UserError
from distrinews.runtime.labels import LABELS
from distrinews.runtime.table_scoring import answer_columns

VERSION_3 = {"model": "models:/distrinews/3", "registered_model": "distrinews", "version": "3"}


def batch_of(tmp_path, *names: str) -> list[BatchFile]:
    return [BatchFile(tmp_path / f"{n}.csv", tmp_path / "out" / f"{n}.parquet") for n in names]


def test_a_rerun_scores_only_the_files_not_yet_written(tmp_path):
    batch = batch_of(tmp_path, "a", "b")
    write_atomically(pd.DataFrame({"text": ["x"]}), batch[0], VERSION_3)
    assert plan(batch, VERSION_3, overwrite=False) == batch[1:]
    assert plan(batch, VERSION_3, overwrite=True) == batch


def test_an_output_of_another_version_is_not_mixed_with_this_one(tmp_path):
    batch = batch_of(tmp_path, "a")
    write_atomically(pd.DataFrame({"text": ["x"]}), batch[0], VERSION_3)
    version_4 = VERSION_3 | {"model": "models:/distrinews/4", "version": "4"}
    with pytest.raises(UserError, match="scored by models:/distrinews/3, not models:/distrin"):
        plan(batch, version_4, overwrite=False)
    (tmp_path / "out" / "a.parquet").write_text("someone else's")
    with pytest.raises(UserError, match="scored by something else.*overwrite=true"):
        plan(batch, VERSION_3, overwrite=False)


def test_an_input_label_column_is_kept_beside_the_answers(capsys):
    frame = pd.DataFrame({"text": ["x"], "label": [2], "confidence": [0.5], "id": [7]})
    kept, renamed = keep_clashing_columns(frame, answer_columns(LABELS))
    assert list(kept.columns) == ["text", "input_label", "input_confidence", "id"]
    assert renamed == {"label": "input_label", "confidence": "input_confidence"}
    assert "the input's column 'label' is kept as 'input_label'" in capsys.readouterr().err
    with pytest.raises(UserError, match="input_label too"):
        keep_clashing_columns(frame.assign(input_label=1), answer_columns(LABELS))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"input": " ", "output": "out"}, "pass -P input="),
        ({"input": "in", "output": "out", "text_column": ""}, "text_column is empty"),
        ({"input": "in", "output": "out", "processes": -1}, "processes must be >= 0"),
        ({"input": "in", "output": "out", "max_text_chars": 0}, "max_text_chars >= 1"),
    ],
)
def test_bad_settings_are_refused_in_one_line(settings, message):
    with pytest.raises(UserError, match=message):
        PredictConfig(**settings)


def test_a_model_onnx_runtime_cannot_open_is_one_line_before_any_file(tmp_news_model):
    folder, batch = tmp_news_model
    cfg = PredictConfig(input=str(batch[0].input.parent), output=str(batch[0].output.parent))
    with pytest.raises(UserError, match=r"cannot load .*model\.onnx.*; pass -P model="):
        score_files(batch, batch, cfg, folder, VERSION_3)
    assert not batch[0].output.exists()


@pytest.fixture()
def tmp_news_model(tmp_path, tiny_onnx):
    """A folder with the tiny model's files but an ONNX file that is not one; a CSV to score."""
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (folder / name).write_bytes((tiny_onnx / name).read_bytes())
    (folder / "model.onnx").write_text("not a model")
    (tmp_path / "news").mkdir()
    (tmp_path / "news" / "a.csv").write_text("text\nOil rose\n")
    return folder, [BatchFile(tmp_path / "news" / "a.csv", tmp_path / "out" / "a.parquet")]
