"""The files of a batch predict run: which inputs, how they are read, and outputs that are
whole or absent and say which model wrote them."""

import pandas as pd
import pyarrow.parquet as pq
import pytest

from distrinews.errors import UserError
from distrinews.predict.files import (
    BatchFile,
    file_sha256,
    find_inputs,
    read_input,
    remove_partials,
    scored_by,
    write_atomically,
)


def test_a_folder_s_input_files_in_name_order_each_with_its_output(tmp_path):
    source = tmp_path / "news"
    source.mkdir()
    for name in ("b.csv", "a.parquet", "c.jsonl", "notes.txt", ".hidden.csv"):
        (source / name).write_text("")
    (source / "sub").mkdir()
    batch = find_inputs(str(source), str(tmp_path / "out"))
    assert [(item.input.name, item.output.name) for item in batch] == [
        ("a.parquet", "a.parquet"),
        ("b.csv", "b.parquet"),
        ("c.jsonl", "c.parquet"),
    ]
    assert batch[0].partial.name == ".a.parquet.partial"


@pytest.mark.parametrize(
    ("files", "output", "message"),
    [
        ((), "out", "holds no input files"),
        (("a.csv", "a.jsonl"), "out", "would both be scored into"),
        (("a.parquet",), "news", "is the input's folder"),
    ],
)
def test_inputs_that_cannot_be_scored_say_why(tmp_path, files, output, message):
    source = tmp_path / "news"
    source.mkdir()
    for name in files:
        (source / name).write_text("")
    with pytest.raises(UserError, match=message):
        find_inputs(str(source), str(tmp_path / output))


def test_a_missing_input_or_an_unknown_format_is_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        find_inputs(str(tmp_path / "nothing"), str(tmp_path / "out"))
    (tmp_path / "news.xlsx").write_text("")
    with pytest.raises(UserError, match="read .parquet, .csv, .jsonl, .ndjson files only"):
        find_inputs(str(tmp_path / "news.xlsx"), str(tmp_path / "out"))


def test_a_csv_s_texts_stay_strings_and_an_empty_cell_is_missing(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text('text,id\n1984,1\n,2\n"Oil, again",3\n')
    frame = read_input(path, "text")
    assert frame["text"].tolist()[0] == "1984" and pd.isna(frame["text"].tolist()[1])
    assert frame["text"].tolist()[2] == "Oil, again" and frame["id"].tolist() == [1, 2, 3]


def test_json_lines_keep_their_values_as_written(tmp_path):
    path = tmp_path / "news.jsonl"
    path.write_text('{"text": "Oil rose", "n": 1}\n{"text": 5, "n": 2}\n')
    assert read_input(path, "text")["text"].tolist() == ["Oil rose", 5]


def test_a_file_without_the_text_column_or_unreadable_says_what_to_do(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text("headline\nOil rose\n")
    with pytest.raises(UserError, match=r"no column 'text' \(its columns: headline\); pass -P"):
        read_input(path, "text")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(UserError, match="cannot read"):
        read_input(broken, "text")


def test_an_output_is_written_whole_with_its_model_and_no_partial_left(tmp_path):
    item = BatchFile(tmp_path / "a.csv", tmp_path / "out" / "a.parquet")
    frame = pd.DataFrame({"text": ["Oil rose", None], "mixed": ["a", 5]})
    record = {"model": "models:/distrinews/3", "version": "3"}
    write_atomically(frame, item, record)
    assert scored_by(item.output) == record
    assert pq.read_table(item.output).column("mixed").to_pylist() == ["a", "5"]
    assert sorted(p.name for p in item.output.parent.iterdir()) == ["a.parquet"]


@pytest.mark.parametrize(
    "index",
    [
        pd.Index([17, 3, 42], name="id"),
        pd.MultiIndex.from_tuples([("2024-01-02", 1), ("2024-01-02", 2), ("2024-01-03", 1)]),
        pd.Index(["x", "y", "z"]),
        pd.RangeIndex(150, 153),
    ],
    ids=["named id", "multiindex", "unnamed labels", "range from 150"],
)
def test_an_output_keeps_its_input_s_index_through_a_parquet_round_trip(tmp_path, index):
    item = BatchFile(tmp_path / "a.parquet", tmp_path / "out" / "a.parquet")
    frame = pd.DataFrame({"text": ["Oil rose", None, "Rain"], "label": ["Business", "", "World"]})
    write_atomically(frame.set_axis(index), item, {"model": "m"})
    pd.testing.assert_index_equal(pd.read_parquet(item.output).index, index)


def test_a_file_s_hash_changes_with_its_bytes_only(tmp_path):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("text\nOil rose\n")
    second.write_text("text\nOil rose\n")
    assert file_sha256(first) == file_sha256(second)
    second.write_text("text\nOil rose\nRain\n")
    assert file_sha256(first) != file_sha256(second)
    with pytest.raises(UserError, match="cannot read"):
        file_sha256(tmp_path / "absent.csv")


def test_an_output_that_cannot_be_renamed_into_place_leaves_no_partial(tmp_path):
    item = BatchFile(tmp_path / "a.csv", tmp_path / "out" / "a.parquet")
    item.output.mkdir(parents=True)  # a folder where the file should go
    with pytest.raises(OSError):
        write_atomically(pd.DataFrame({"text": ["Oil rose"]}), item, {"model": "m"})
    assert item.output.is_dir() and not item.partial.exists()


def test_partials_a_killed_run_left_are_removed_and_other_files_kept(tmp_path):
    (tmp_path / ".a.parquet.partial").write_text("half")
    (tmp_path / "b.parquet").write_text("whole")
    assert [p.name for p in remove_partials(tmp_path)] == [".a.parquet.partial"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.parquet"]
    assert remove_partials(tmp_path / "absent") == []


def test_a_file_of_someone_else_records_no_model(tmp_path):
    (tmp_path / "x.parquet").write_text("not parquet")
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "y.parquet")
    assert scored_by(tmp_path / "x.parquet") is None and scored_by(tmp_path / "y.parquet") is None
