"""Settings: the dataclasses refuse bad values with a UserError (naming the setting)."""

import re

import pytest

from distrinews.cli import parse_training_job
from distrinews.config import PromoteConfig
from distrinews.errors import UserError


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "epochs=0"),
        (["--lr", "-1"], "lr=-1"),
        (["--val-fraction", "0.9"], "val_fraction"),
        (["--max-length", "4"], "max_length"),
        (["--grad-accum", "0"], "grad_accum"),
        (["--precision", "fp8"], "precision='fp8'"),
        (["--init-from", "models:/distrinews"], "init_from='models:/distrinews'"),
        (["--feedback-since", "7d"], "feedback is empty"),
        (["--layers", "-1"], "layers=-1"),
        (["--teacher", "models:/distrinews"], "teacher='models:/distrinews'"),
        (["--distill-temperature", "0"], "distill_temperature=0.0 must be > 0"),
        (["--distill-alpha", "1.5"], "distill_alpha=1.5 in [0, 1]"),
    ],
)
def test_bad_values_raise_a_user_error(argv, message):
    with pytest.raises(UserError, match=re.escape(message)):
        parse_training_job(argv)


@pytest.mark.parametrize(
    "settings",
    [
        {"version": "v2"},
        {"registered_model": " "},
        {"max_p95_ms": 0},
        {"max_accuracy_drop": -1},
        {"max_production_drop": -1},
        {"max_budget_drop": -1},
    ],
)
def test_bad_settings_are_refused(settings):
    with pytest.raises(UserError):
        PromoteConfig(**settings)
