"""Which weights a warm start continues, against a real SQLite registry; and its class check."""

import json

import pytest

from devkit.mlflow_store import model_registry, register_folder
from distrinews.errors import UserError
from distrinews.train.warm_start import check_same_classes, find_lineage

NAME = "distrinews"


def test_a_version_or_run_without_a_train_run_behind_it_is_refused(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with model_registry(tmp_path / "store", NAME) as store:
        version = register_folder(store.client, NAME, folder, NAME)
        store.client.set_registered_model_alias(NAME, "champion", version)
        with pytest.raises(UserError, match="not exported from a train run"):
            find_lineage(f"models:/{NAME}@champion")
        with pytest.raises(UserError, match="no such alias"):
            find_lineage(f"models:/{NAME}@nobody")
        run_id = store.client.get_model_version(NAME, version).run_id
        with pytest.raises(UserError, match="is not a train run"):
            find_lineage(run_id)
        with pytest.raises(UserError, match="no such run"):
            find_lineage("0123456789abcdef0123456789abcdef")
        # An exported version names its train run: that run is where the weights come from.
        store.client.set_tag(run_id, "step", "train")
        store.client.set_model_version_tag(NAME, version, "source_run_id", run_id)
        lineage = find_lineage(f"models:/{NAME}@champion")
    assert (lineage.run_id, lineage.version) == (run_id, str(version))
    assert lineage.tags()["init_from_version"] == str(version)


def test_a_warm_start_keeps_its_head_so_the_classes_must_match(tmp_path):
    config = {"id2label": {"0": "neg", "1": "pos"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    check_same_classes(tmp_path, ("neg", "pos"), "models:/m/1")
    for labels in (("pos", "neg"), ("neg", "pos", "neutral")):
        with pytest.raises(UserError, match="predicts neg, pos.*a new class set is a new model"):
            check_same_classes(tmp_path, labels, "models:/m/1")
