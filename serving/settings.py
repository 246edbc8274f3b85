"""Every server setting in one place; each can be set as DISTRINEWS_<NAME> in the environment."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTRINEWS_", frozen=True)

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
    threads: int = Field(
        0, ge=0, description="ONNX Runtime threads (0: the CPUs this process may use)"
    )
    # Off: on 2 vCPUs shared with a busy neighbour process, spinning threads
    # took several times the CPU of sleeping ones and slowed the server itself;
    # alone, the two were within noise (benchmarks/neighbour.md,
    # benchmarks/serving.md). A Space shares its host.
    spinning: bool = Field(
        False, description="Let idle ONNX Runtime threads spin, waiting for the next request"
    )
    max_batch_texts: int = Field(
        64, ge=1, description="Most texts one /predict/batch request may send"
    )
    max_text_chars: int = Field(
        10_000,
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
    access_log: bool = Field(
        True,
        description="Log one JSON line per request (time, id, route, status, latency, text "
        "length, label; never the text)",
    )
    micro_batch_window_ms: float = Field(
        1.0,
        ge=0,
        description="How long a request waits for others to share its inference (0: none)",
    )
