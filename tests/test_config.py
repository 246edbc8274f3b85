import dataclasses
import re

import pytest
import yaml

from distrinews.config import (
    DataConfig,
    ModelConfig,
    TrainConfig,
    UserError,
    parse_training_job,
)
from tests.conftest import REPO


def test_mlflow_style_strings_are_parsed_to_typed_fields():
    job = parse_training_job(
        ["--lr", "1e-4", "--epochs", "3", "--resume", "false", "--val-fraction", "0.1"]
    )
    assert job.train.lr == pytest.approx(1e-4)
    assert job.train.epochs == 3
    assert job.train.resume is False
    assert job.data.val_fraction == pytest.approx(0.1)
    assert parse_training_job(["--resume", "True"]).train.resume is True


def test_params_are_flat_and_complete():
    params = parse_training_job([]).as_params()
    for cls in (DataConfig, ModelConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            assert f.name in params


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "epochs=0"),
        (["--lr", "-1"], "lr=-1"),
        (["--val-fraction", "0.9"], "val_fraction"),
        (["--max-length", "4"], "max_length"),
        (["--grad-accum", "0"], "grad_accum"),
    ],
)
def test_bad_values_raise_a_user_error(argv, message):
    with pytest.raises(UserError, match=re.escape(message)):
        parse_training_job(argv)


def test_unparseable_value_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_training_job(["--lr", "fast"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--lr" in err


def test_mlproject_train_parameters_match_the_dataclass_defaults():
    """MLproject repeats each default; this keeps it equal to config.py, the source of truth."""
    entry = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]["train"]
    parameters, command = entry["parameters"], entry["command"]
    for cls in (DataConfig, ModelConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            assert f.name in parameters, f"MLproject lacks parameter {f.name}"
            default = parameters[f.name]["default"]
            if isinstance(f.default, bool):
                assert str(default).lower() == str(f.default).lower(), f.name
            else:
                assert type(f.default)(default) == f.default, f.name
            assert f"--{f.name.replace('_', '-')} {{{f.name}}}" in command, f.name
