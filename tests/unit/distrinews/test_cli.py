"""The command line of each step, built from the settings dataclasses: parsing, typing,
and every training setting reaching its field and the logged params."""

import sys

import pytest

from distrinews.cli import STEPS, field_type, parse_training_job, step_command, step_fields


def test_mlflow_style_strings_are_parsed_to_typed_fields():
    job = parse_training_job(
        ["--lr", "1e-4", "--epochs", "3", "--resume", "false", "--val-fraction", "0.1"]
    )
    assert job.train.lr == pytest.approx(1e-4)
    assert job.train.epochs == 3
    assert job.train.resume is False
    assert job.data.val_fraction == pytest.approx(0.1)
    assert parse_training_job(["--resume", "True"]).train.resume is True


def other_value(default: object, kind: type) -> object:
    """A valid value other than the default, of the field's type."""
    if kind is bool:
        return not default
    if kind is int:
        return default + 1
    if kind is float:
        return default / 2
    return {"auto": "fp32"}.get(default, f"other{default}")


def test_every_training_setting_reaches_its_field_and_the_logged_params():
    expected, argv = {}, []
    for config_class, only in STEPS["train"].groups:
        for f in step_fields(config_class, only):
            value = other_value(f.default, field_type(config_class, f.name))
            expected[f.name] = value
            argv += [f"--{f.name.replace('_', '-')}", str(value)]
    job = parse_training_job(argv)
    assert vars(job.tracking) == {name: expected.pop(name) for name in vars(job.tracking)}
    # The experiment and run name are where the run is and what it is called, not params.
    assert job.as_params() == expected | {"system_metrics": job.tracking.system_metrics}


def test_unparseable_value_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_training_job(["--lr", "fast"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--lr" in err


def test_step_commands_are_the_mlproject_ones():
    train = step_command("train", 2, epochs=1, resume=False)
    assert train[:6] == [
        "torchrun",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "pipelines.train",
    ]
    assert train[6:] == ["--epochs", "1", "--resume", "false"]
    export = step_command("export", run_id="abc", max_accuracy_drop=0.5)
    assert export == [sys.executable, "-m", "pipelines.export", "--run-id", "abc"] + [
        "--max-accuracy-drop",
        "0.5",
    ]
