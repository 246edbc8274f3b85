"""Warm start: the weights a new train run starts from when it continues an earlier model,
found from a registered version (through the train run its export came from) or a run id.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from distrinews.errors import ModelFolderError, UserError
from distrinews.runtime.labels import class_names
from distrinews.runtime.model_source import VERSION_URI, first_line, resolve_source
from distrinews.train.logged_models import load_logged_model


@dataclass(frozen=True)
class Lineage:
    """What a warm-started run came from: its tags say so in the UI."""

    init_from: str  # as the user named it
    run_id: str  # the train run whose logged model the weights are
    version: str = ""  # the registered version behind `init_from`, if it named one
    setting: str = "init_from"  # the setting that named it: init_from, or a student's teacher

    def tags(self) -> dict[str, str]:
        tags = {self.setting: self.init_from, f"{self.setting}_run_id": self.run_id}
        return tags | ({f"{self.setting}_version": self.version} if self.version else {})


def find_lineage(init_from: str, setting: str = "init_from") -> Lineage:
    """The train run behind `init_from`: a registered version's source run, or a run id.
    `setting` names the parameter in errors and tags."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    if not init_from.startswith("models:/"):
        try:
            run = client.get_run(init_from)
        except MlflowException as err:
            raise UserError(f"{setting}={init_from!r}: no such run ({first_line(err)})") from err
        if run.data.tags.get("step") != "train":
            raise UserError(f"{setting}={init_from!r} is not a train run; pass a train run's id")
        return Lineage(init_from, init_from, setting=setting)
    try:
        source = resolve_source(init_from)
        match = VERSION_URI.match(source.uri)
        version = client.get_model_version(match["name"], match["version"])
    except (ModelFolderError, MlflowException) as err:
        raise UserError(f"{setting}={init_from!r}: {first_line(err)}") from err
    run_id = version.tags.get("source_run_id")
    if not run_id:
        raise UserError(
            f"{setting}={init_from!r}: version {version.version} was not exported from a train "
            "run (no source_run_id tag), so there are no weights to start from; pass a train "
            "run id"
        )
    return Lineage(init_from, run_id, str(version.version), setting)


def warm_start_folder(init_from: str, labels: tuple[str, ...], into: Path) -> tuple[Path, Lineage]:
    """The weights behind `init_from` as a save_pretrained folder in `into`, checked to
    predict exactly `labels`, the data's classes."""

    lineage = find_lineage(init_from)
    model, tokenizer, _ = load_logged_model(lineage.run_id)
    model.save_pretrained(into)
    tokenizer.save_pretrained(into)
    check_same_classes(into, labels, init_from)
    return into, lineage


def check_same_classes(folder: Path, labels: tuple[str, ...], init_from: str) -> None:
    """A warm start keeps the trained head, so its classes must be the data's, in order."""
    config = json.loads((folder / "config.json").read_text())
    trained = class_names(config.get("id2label"))
    if trained != labels:
        raise UserError(
            f"init_from={init_from!r} predicts {', '.join(trained)}, the data has "
            f"{', '.join(labels)}; a new class set is a new model: train from the base encoder "
            "(drop init_from)"
        )
