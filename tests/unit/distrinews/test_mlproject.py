"""MLproject: generated from the dataclasses, and its commands give each step's defaults."""

import shlex

import pytest
import yaml

from devkit.processes import REPO
from distrinews import mlproject
from distrinews.cli import STEPS, build_parser


def test_mlproject_is_rendered_from_the_dataclasses():
    assert (REPO / "MLproject").read_text() == mlproject.render(), (
        "MLproject is out of date: run `python -m distrinews.mlproject`"
    )


@pytest.mark.parametrize("step", list(STEPS))
def test_each_entry_point_command_gives_the_steps_defaults(step):
    """What `mlflow run` runs with the MLproject defaults parses to the dataclass defaults."""
    entry = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"][step]
    # A required parameter (no default) is given a value of its own name.
    values = {name: spec.get("default", name) for name, spec in entry["parameters"].items()}
    command = entry["command"].format(**{k: shlex.quote(str(v)) for k, v in values.items()})
    arguments = shlex.split(command.split(f"-m {STEPS[step].module}", 1)[1])
    required = [
        part
        for name, spec in entry["parameters"].items()
        if "default" not in spec
        for part in (f"--{name.replace('_', '-')}", name)
    ]
    assert build_parser(step).parse_args(arguments) == build_parser(step).parse_args(required)
