"""Which files a predict run scores, and how an input's own `label` column is kept."""

from dataclasses import replace

import pandas as pd
import pytest

from distrinews.config import PredictConfig
from distrinews.errors import UserError
from distrinews.predict.files import BatchFile, write_atomically
from distrinews.predict.step import input_fingerprint, keep_clashing_columns, plan, score_files
from distrinews.runtime.labels import LABELS
from distrinews.runtime.table_scoring import answer_columns

VERSION_3 = {"model": "models:/distrinews/3", "registered_model": "distrinews", "version": "3"}


def batch_of(tmp_path, *names: str) -> list[BatchFile]:
    """Input CSV files of one text each, and where their outputs go."""
    for name in names:
        (tmp_path / f"{name}.csv").write_text("text\nOil rose\n")
    return [BatchFile(tmp_path / f"{n}.csv", tmp_path / "out" / f"{n}.parquet") for n in names]


def settings(tmp_path, **changes) -> PredictConfig:
    return PredictConfig(input=str(tmp_path), output=str(tmp_path / "out"), **changes)


def write_scored(item: BatchFile, cfg: PredictConfig, record: dict = VERSION_3) -> None:
    """An output of `item` as `record`'s model writes it with `cfg` (no answers: plan reads
    only what the output records)."""
    record = record | {"input": input_fingerprint(item.input, cfg)}
    write_atomically(pd.DataFrame({"text": ["Oil rose"]}), item, record)


def test_a_rerun_scores_only_the_files_not_yet_written(tmp_path):
    batch, cfg = batch_of(tmp_path, "a", "b"), settings(tmp_path)
    write_scored(batch[0], cfg)
    assert plan(batch, VERSION_3, cfg) == {batch[1]: "no output yet"}
    overwrite = settings(tmp_path, overwrite=True)
    assert plan(batch, VERSION_3, overwrite) == {
        batch[0]: "overwrite=true",
        batch[1]: "no output yet",
    }


def grow(item: BatchFile, cfg: PredictConfig) -> PredictConfig:
    item.input.write_text("text\nOil rose\nRain\n")
    return cfg


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (grow, "the input changed since it was scored"),
        (
            lambda item, cfg: replace(cfg, text_column="headline"),
            "text_column changed ('text' -> 'headline')",
        ),
        (lambda item, cfg: replace(cfg, max_text_chars=5), "max_text_chars changed (10000 -> 5)"),
    ],
    ids=["the input grew", "another text column", "another text limit"],
)
def test_an_output_whose_input_or_answer_settings_changed_is_scored_again(tmp_path, change, reason):
    (item,), cfg = batch_of(tmp_path, "a"), settings(tmp_path)
    write_scored(item, cfg)
    assert plan([item], VERSION_3, change(item, cfg)) == {item: reason}


def test_an_output_that_records_no_input_is_scored_again_and_a_re_export_is_kept(tmp_path):
    (item,), cfg = batch_of(tmp_path, "a"), settings(tmp_path)
    write_atomically(pd.DataFrame({"text": ["Oil rose"]}), item, VERSION_3)  # an older predict
    assert "records no input fingerprint" in plan([item], VERSION_3, cfg)[item]
    write_scored(item, cfg)
    item.input.write_text("text\nOil rose\n")  # the same bytes written again: a new mtime
    assert plan([item], VERSION_3, cfg) == {}


def test_an_output_of_another_version_is_not_mixed_with_this_one(tmp_path):
    (item,), cfg = batch_of(tmp_path, "a"), settings(tmp_path)
    write_scored(item, cfg)
    item.input.write_text("text\nOil rose\nRain\n")  # changed, and still not replaced
    version_4 = VERSION_3 | {"model": "models:/distrinews/4", "version": "4"}
    with pytest.raises(UserError, match="scored by models:/distrinews/3, not models:/distrin"):
        plan([item], version_4, cfg)
    item.output.write_text("someone else's")
    with pytest.raises(UserError, match="scored by something else.*overwrite=true"):
        plan([item], VERSION_3, cfg)


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
