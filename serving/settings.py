"""Every server setting in one place; each can be set as DISTRINEWS_<NAME> in the environment.

A secret (the feedback token) is a SecretStr: its repr and str are masked, and a settings
error never echoes what was given (`hide_input_in_errors`, and `settings_error`'s lines).
"""

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from distrinews.runtime.text_rules import MAX_TEXT_CHARS


def spinning_word(value: object) -> object:
    """true and false (the setting was a boolean before "inference" existed) as on and off."""
    words = {"true": "on", "1": "on", "yes": "on", "false": "off", "0": "off", "no": "off"}
    if isinstance(value, bool):
        return "on" if value else "off"
    return words.get(str(value).strip().lower(), value) if isinstance(value, str) else value


#: The keys of distrinews.runtime.onnx_classifier.SPINNING.
Spinning = Annotated[Literal["off", "inference", "on"], BeforeValidator(spinning_word)]


class Settings(BaseSettings):
    # hide_input_in_errors: pydantic would print each bad value, and a model validator's
    # error shows every setting, the token among them.
    model_config = SettingsConfigDict(
        env_prefix="DISTRINEWS_", frozen=True, hide_input_in_errors=True
    )

    model: str = Field(
        "",
        description="Exported model folder, or an MLflow URI "
        "(runs:/<id>/onnx_model, models:/<name>/<version>, models:/<name>@<alias>)",
    )
    reload_seconds: float = Field(
        0,
        ge=0,
        description="With models:/<name>@<alias>: check the alias this often and serve the "
        "version it points to (0: never)",
    )
    # serving.rollout: a second model beside the served one, judged on live traffic.
    challenger: str = Field(
        "",
        description="A second model to judge on live traffic beside DISTRINEWS_MODEL, usually "
        "models:/<name>@challenger (followed like the model; the alias may come and go); "
        "empty: none",
    )
    shadow_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of requests the challenger also scores after the answer is sent "
        "(the client gets the model's answer; dropped first when the server is busy)",
    )
    canary_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of clients answered by the challenger, by a hash of their "
        "X-Client-Key header (else of the request id): a client key stays with one model",
    )
    threads: int = Field(
        0, ge=0, description="ONNX Runtime threads (0: the CPUs this process may use)"
    )
    # Measured in benchmarks/neighbour.md and benchmarks/serving.md (issue 34): "on" burns a
    # core for a while after every request (a neighbour on the same vCPUs loses it);
    # "off" pays a thread wake-up at each of a run's parallel sections.
    spinning: Spinning = Field(
        "inference",
        description="How ONNX Runtime's idle threads wait: off (sleep), inference (spin "
        "only while an inference runs), on (also for a while after each; true/false: on/off)",
    )
    max_batch_texts: int = Field(
        64, ge=1, description="Most texts one /predict/batch request may send"
    )
    max_text_chars: int = Field(
        MAX_TEXT_CHARS,
        ge=1,
        description="Longer texts get 422; shorter ones are truncated to the model's max tokens",
    )
    max_body_bytes: int = Field(1_000_000, ge=1, description="Larger request bodies get 413")
    # Off (1) by default: on 2 vCPUs a batch is no faster per text than one
    # text alone (benchmarks/serving.md), and dynamic int8 quantization scales
    # activations per batch, so a text's scores would depend on its neighbours.
    micro_batch_size: int = Field(
        1, ge=1, description="Most texts from concurrent requests combined into one inference"
    )
    monitoring: bool = Field(
        True,
        description="Count predictions by label and confidence, and keep the drift window "
        "(off: request metrics only)",
    )
    drift_window: int = Field(
        1000,
        ge=10,
        description="Predictions in the sliding window that the drift gauges on /metrics "
        "compare with the model's reference profile",
    )
    prediction_log: str = Field(
        "sqlite:///predictions.db",
        description="Where each answered prediction is written: a SQLAlchemy URL (a SQLite "
        "file by default, relative to the working directory; PostgreSQL for several "
        "replicas); empty: no log",
    )
    log_texts: bool = Field(
        False, description="Also write each text into the prediction log (off: never stored)"
    )
    log_sample: float = Field(
        1.0, gt=0, le=1, description="Share of requests whose predictions are logged"
    )
    log_queue: int = Field(
        10_000,
        ge=1,
        description="Requests waiting to be written; when full, new ones are dropped "
        "(counted), never waited for",
    )
    log_flush_seconds: float = Field(
        1.0,
        gt=0,
        description="The writer writes at least this often (a kill -9 loses at most this)",
    )
    # 0 by default: deleting is for good, the feedback among it is the retrain's training
    # data, and how far back the monitor and the retrain look is the operator's choice.
    log_retention_days: int = Field(
        0,
        ge=0,
        description="Predictions and feedback older than this many days are deleted, at "
        "start and then hourly (0: kept forever)",
    )
    feedback_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token that POST /feedback requires (empty: no /feedback route)",
    )
    feedback_window: int = Field(
        200, ge=1, description="Feedback items per model version behind the live-accuracy gauge"
    )
    access_log: bool = Field(
        True,
        description="Log one JSON line per request (time, id, route, status, latency, text "
        "length, label; never the text)",
    )
    stage_timing: bool = Field(
        False,
        description="Time each stage of a prediction request (parse, thread hops, "
        "tokenization, model, answer, sending, access log) into "
        "distrinews_stage_duration_seconds on /metrics",
    )
    micro_batch_window_ms: float = Field(
        1.0,
        ge=0,
        description="How long a request waits for others to share its inference (0: none)",
    )
    # Under overload a queue only grows: every admitted request waits for all before it.
    # Unset, the bound is sized from the model's own speed (serving.admission.queue_bound):
    # benchmarks/overload.md measured what bounds do under 10x the load.
    max_queue: int | None = Field(
        None,
        ge=0,
        description="Most prediction requests in the server's hands at once (running or "
        "waiting for the model); more get 429 with Retry-After (0: no limit; unset: as many "
        "as the model answers in 25 ms, timed at warm-up, at least 2)",
    )

    @model_validator(mode="after")
    def shares_need_a_challenger(self) -> "Settings":
        shared = self.shadow_share or self.canary_share
        if shared and not self.challenger:
            raise ValueError(
                "DISTRINEWS_SHADOW_SHARE or DISTRINEWS_CANARY_SHARE is set but "
                "DISTRINEWS_CHALLENGER is empty: set the challenger to judge"
            )
        if self.challenger and not shared:
            raise ValueError(
                "DISTRINEWS_CHALLENGER is set but no request would reach it: set "
                "DISTRINEWS_SHADOW_SHARE or DISTRINEWS_CANARY_SHARE"
            )
        return self

    @model_validator(mode="after")
    def feedback_needs_the_log(self) -> "Settings":
        if self.feedback_token.get_secret_value() and not self.prediction_log:
            raise ValueError(
                "DISTRINEWS_FEEDBACK_TOKEN is set but DISTRINEWS_PREDICTION_LOG is empty: "
                "feedback is recorded against the prediction log; set both"
            )
        return self


def settings_error(err: ValidationError) -> str:
    """Every bad setting on one line, each as `name: what is wrong`, never the value given
    (a secret may be among them)."""
    problems = []
    for error in err.errors(include_input=False, include_url=False):
        message = error["msg"].removeprefix("Value error, ")  # a validator's own words
        name = ".".join(map(str, error["loc"]))
        problems.append(f"{name}: {message}" if name else message)
    return "; ".join(problems)
