"""The docs pages that restate what the code defines agree with it."""

import re

import yaml

from devkit.processes import REPO
from distrinews import mlproject
from distrinews.cli import build_parser

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
        written = "" if written == "(empty)" else written  # an optional setting, unset
        assert written.lower() == str(value).lower() or float(written) == value, name
