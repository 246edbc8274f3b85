"""Each pipeline step's command line, built from the settings dataclasses of `config`.

MLflow passes MLproject parameters as strings: they are parsed and validated
here, once, into the dataclasses. `distrinews.mlproject` renders MLproject from
the same `STEPS`, and `torchrun_command` is the one place the train launch is spelled.
"""

import argparse
import sys
import typing
from dataclasses import MISSING, Field, dataclass, fields
from typing import Any

from distrinews.config import (
    DataConfig,
    DistillConfig,
    EvaluateConfig,
    ExportConfig,
    FeedbackConfig,
    ModelConfig,
    MonitorConfig,
    PredictConfig,
    PromoteConfig,
    RetrainConfig,
    RetrainJob,
    TrackingConfig,
    TrainConfig,
    TrainingJob,
)

#: What evaluate and export take of DataConfig: the test split and its cap.
#: Truncation and the split seed come from the train run they score.
TEST_DATA_FIELDS = ("data", "max_eval_rows")
#: The monitor settings a retrain takes: its versions' own profiles are the reference.
RETRAIN_MONITOR_FIELDS = (
    *("store", "since", "until", "registered_model"),
    *("max_drift", "min_live_accuracy", "min_feedback", "min_estimated_accuracy"),
    "max_domain_auc",
)
#: The promotion gate's settings a retrain passes on (its registered model is the monitor's).
RETRAIN_GATE_FIELDS = (
    *("max_accuracy_drop", "max_production_drop", "max_p95_ms", "max_budget_drop"),
    "latency_texts",
)


@dataclass(frozen=True)
class Step:
    """A pipeline step's settings: each dataclass, with the fields it takes (empty: all)."""

    module: str
    description: str
    groups: tuple[tuple[type, tuple[str, ...]], ...]


#: The one list of every step's settings: the command-line parsers, the MLproject file
#: (`python -m distrinews.mlproject`) and the tests are all built from it.
STEPS = {
    "train": Step(
        "pipelines.train",
        "Fine-tune a text classifier on AG News with DDP (launch with torchrun).",
        (
            (DataConfig, ()),
            (ModelConfig, ()),
            (TrainConfig, ()),
            (TrackingConfig, ()),
            (FeedbackConfig, ()),
            (DistillConfig, ()),
        ),
    ),
    "evaluate": Step(
        "pipelines.evaluate",
        "Evaluate a logged model on the test split.",
        ((EvaluateConfig, ()), (DataConfig, TEST_DATA_FIELDS)),
    ),
    "export": Step(
        "pipelines.export",
        "Export a trained model to int8 ONNX, check it, and log it to MLflow.",
        ((ExportConfig, ()), (DataConfig, TEST_DATA_FIELDS)),
    ),
    "promote": Step(
        "pipelines.promote",
        "Move the `champion` alias to a registered version if it scores as well and is fast.",
        ((PromoteConfig, ()), (DataConfig, TEST_DATA_FIELDS)),
    ),
    "monitor": Step(
        "pipelines.monitor",
        "Report a window of the server's prediction log and feedback to MLflow: drift from "
        "the reference, live accuracy, whether to retrain.",
        ((MonitorConfig, ()),),
    ),
    "predict": Step(
        "pipelines.predict",
        "Score every row of a file or folder of news with a registered model: label, "
        "confidence and class probabilities per row, a Parquet file per input file.",
        ((PredictConfig, ()),),
    ),
    "retrain": Step(
        "pipelines.retrain",
        "Close the loop: monitor the window, and if it calls for it (or force), train warm "
        "from the champion on train plus the feedback, export, promote; one parent run.",
        (
            (RetrainConfig, ()),
            (MonitorConfig, RETRAIN_MONITOR_FIELDS),
            (FeedbackConfig, ("production_share",)),
            (DataConfig, ("data", "max_length", "max_train_rows", "max_eval_rows")),
            # Not the seed: the champion's, so its validation rows stay unseen (retrain.py).
            (TrainConfig, ("batch_size", "output_dir")),
            (PromoteConfig, RETRAIN_GATE_FIELDS),
        ),
    ),
}


def step_fields(config_class: type, only: tuple[str, ...] = ()) -> list[Field]:
    """The dataclass's fields, or those named in `only`."""
    return [f for f in fields(config_class) if not only or f.name in only]


def field_type(config_class: type, name: str) -> type:
    return typing.get_type_hints(config_class)[name]


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "y", "on"):
        return True
    if value in ("0", "false", "no", "n", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line instead of the usage block."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_config_arguments(
    parser: argparse.ArgumentParser, config_class: type, only: tuple[str, ...] = ()
) -> None:
    """Add one --flag per dataclass field (or per field named in `only`), typed and documented."""
    group = parser.add_argument_group(config_class.__name__)
    for f in step_fields(config_class, only):
        kind = field_type(config_class, f.name)
        required = f.default is MISSING
        group.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            type=parse_bool if kind is bool else kind,
            required=required,
            default=None if required else f.default,
            metavar=kind.__name__.upper(),
            help=f.metadata["help"] + ("" if required else f" (default: {f.default!r})"),
        )


def build_parser(step: str) -> OneLineParser:
    """The argparse parser of a step (`python -m pipelines.<step> --help` shows it)."""
    spec = STEPS[step]
    parser = OneLineParser(prog=spec.module, description=spec.description)
    for config_class, only in spec.groups:
        add_config_arguments(parser, config_class, only)
    return parser


def parse_step(step: str, argv: list[str] | None = None) -> dict[type, Any]:
    """Each of the step's dataclasses, built (and so validated) from the command line.

    Fields a step does not take keep their defaults.
    """
    namespace = build_parser(step).parse_args(argv)
    return {
        config_class: config_class(
            **{f.name: getattr(namespace, f.name) for f in step_fields(config_class, only)}
        )
        for config_class, only in STEPS[step].groups
    }


def parse_training_job(argv: list[str] | None = None) -> TrainingJob:
    configs = parse_step("train", argv)
    return TrainingJob(
        data=configs[DataConfig],
        model=configs[ModelConfig],
        train=configs[TrainConfig],
        tracking=configs[TrackingConfig],
        feedback=configs[FeedbackConfig],
        distill=configs[DistillConfig],
    )


def parse_retrain_job(argv: list[str] | None = None) -> RetrainJob:
    configs = parse_step("retrain", argv)
    kinds = (RetrainConfig, MonitorConfig, FeedbackConfig, DataConfig, TrainConfig, PromoteConfig)
    return RetrainJob(*(configs[kind] for kind in kinds))


def parse_scoring_job(step: str, argv: list[str] | None = None) -> tuple[Any, DataConfig]:
    """A step that scores a model on the test split (evaluate, export, promote): its own
    settings, and those of its test data."""
    configs = parse_step(step, argv)
    own = STEPS[step].groups[0][0]
    return configs[own], configs[DataConfig]


def torchrun_command(
    nproc: int | str, launcher: tuple[str, ...] = ("--standalone",), **options: object
) -> list[str]:
    """`torchrun` launching the train step, each option as `--key value`.

    `launcher` holds torchrun's own flags: one machine by default; a
    rendezvous (`--nnodes`, `--rdzv-endpoint`, ...) for several. MLproject's
    train command is rendered from it too, with `{placeholders}` as values.
    """
    module = STEPS["train"].module
    return ["torchrun", *launcher, "--nproc-per-node", str(nproc), "-m", module, *flags(options)]


def flags(options: dict[str, object]) -> list[str]:
    """`--key value` per option (booleans as true/false, as parse_bool reads them)."""
    command = []
    for key, value in options.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        command += [f"--{key.replace('_', '-')}", text]
    return command


def step_command(step: str, nproc: int | str = "auto", **options: object) -> list[str]:
    """The command `mlflow run . -e <step>` runs, each option as `--key value`: torchrun for
    train, this Python for the others. A workflow (retrain) starts its steps with it."""
    if step == "train":
        return torchrun_command(nproc, **options)
    return [sys.executable, "-m", STEPS[step].module, *flags(options)]
