"""Where the export step writes its model folder (`-P output=`): whole or not at all, and
never over a folder of something else. The export itself: tests/integration/test_export.py."""

import pytest

from distrinews.errors import UserError
from distrinews.export.step import REPORT, check_replaceable, publish


def exported_folder(folder, marker: str):
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_text(marker)
    (folder / REPORT).write_text("{}")
    return folder


def test_an_earlier_export_is_replaced_whole(tmp_path):
    output = exported_folder(tmp_path / "serving-model", "old")
    (output / "only-in-the-old-one.txt").write_text("stale")
    check_replaceable(output)
    publish(exported_folder(tmp_path / "work", "new"), output)
    assert sorted(p.name for p in output.iterdir()) == [REPORT, "model.onnx"]
    assert (output / "model.onnx").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serving-model", "work"], "no leftovers"


def test_a_new_or_empty_output_is_written(tmp_path):
    (tmp_path / "empty").mkdir()
    for output in (tmp_path / "new" / "model", tmp_path / "empty"):
        check_replaceable(output)
        publish(exported_folder(tmp_path / f"work-{output.name}", "new"), output)
        assert (output / "model.onnx").read_text() == "new"


@pytest.mark.parametrize("kind", ["a folder of something else", "a file"])
def test_anything_else_is_refused_and_kept(tmp_path, kind):
    output = tmp_path / "mistyped"
    if kind == "a file":
        output.write_text("notes")
    else:
        output.mkdir()
        (output / "README.md").write_text("my project")
    with pytest.raises(UserError, match="is not an exported model folder"):
        check_replaceable(output)
    assert output.exists()


def test_a_copy_that_fails_leaves_the_earlier_export_as_it_was(tmp_path):
    output = exported_folder(tmp_path / "serving-model", "old")
    work = exported_folder(tmp_path / "work", "new")
    (work / "dangling").symlink_to(tmp_path / "missing")  # copytree fails on it
    with pytest.raises(OSError):
        publish(work, output)
    assert (output / "model.onnx").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serving-model", "work"], "no leftovers"
