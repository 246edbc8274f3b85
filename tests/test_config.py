"""Settings: one definition per setting (the dataclasses), and everything else built from it."""

import re
import shlex

import pytest
import yaml

from devkit.processes import REPO
from distrinews import mlproject
from distrinews.cli import STEPS, build_parser, field_type, parse_training_job, step_fields
from distrinews.errors import UserError


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


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "epochs=0"),
        (["--lr", "-1"], "lr=-1"),
        (["--val-fraction", "0.9"], "val_fraction"),
        (["--max-length", "4"], "max_length"),
        (["--grad-accum", "0"], "grad_accum"),
        (["--precision", "fp8"], "precision='fp8'"),
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


def test_mlproject_is_rendered_from_the_dataclasses():
    assert (REPO / "MLproject").read_text() == mlproject.render(), (
        "MLproject is out of date: run `python -m distrinews.mlproject`"
    )


@pytest.mark.parametrize("step", list(STEPS))
def test_each_entry_point_command_gives_the_steps_defaults(step):
    """What `mlflow run` runs with the MLproject defaults parses to the dataclass defaults."""
    entry = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"][step]
    values = {
        name: spec.get("default", "some-run-id") for name, spec in entry["parameters"].items()
    }
    command = entry["command"].format(**{k: shlex.quote(str(v)) for k, v in values.items()})
    arguments = shlex.split(command.split(f"-m {STEPS[step].module}", 1)[1])
    required = ["--run-id", "some-run-id"] if step == "evaluate" else []
    assert build_parser(step).parse_args(arguments) == build_parser(step).parse_args(required)


#: The page that documents the train parameters, in its "### Parameters" section.
TRAINING_PAGE = REPO / "docs" / "training.md"


def documented_parameter_table() -> dict[str, str]:
    """docs/training.md's train parameter table as {parameter: default as written}."""
    text = TRAINING_PAGE.read_text()
    assert "\n### Parameters\n" in text, f"{TRAINING_PAGE} has no '### Parameters' section"
    section = re.split(r"\n#{1,3} ", text.split("\n### Parameters\n", 1)[1])[0]
    table = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        names = re.findall(r"`(\w+)`", cells[0]) if line.startswith("| `") else []
        defaults = [re.sub(r"`| \(.*\)", "", d) for d in cells[1].split(", ")] if names else []
        if len(defaults) == 1:  # one default for the whole row
            defaults *= len(names)
        assert len(defaults) == len(names), line
        table.update(zip(names, defaults, strict=True))
    return table


def test_training_page_parameter_table_lists_every_train_parameter_with_its_default():
    table = documented_parameter_table()
    parameters = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]["train"][
        "parameters"
    ]
    assert set(table) == set(parameters), "docs/training.md's table and `mlflow run -e train` agree"
    defaults = vars(build_parser("train").parse_args([]))
    defaults |= {name: spec[1] for name, spec in mlproject.TORCHRUN_PARAMETERS.items()}
    for name, written in table.items():
        value = defaults[name]
        assert written.lower() == str(value).lower() or float(written) == value, name
