"""Fault injection: every promote_registry and artifact call `promote` makes fails once, in turn,
against a real SQLite registry; the alias and the tags must still agree with the gate."""

from pathlib import Path

import mlflow
import pytest

from devkit.mlflow_store import register_folder
from distrinews.config import DataConfig, PromoteConfig
from distrinews.promote.gate import run_promote
from tests.unit.distrinews.promote.test_gate import NAME, OPEN, with_production_slice

pytestmark = pytest.mark.timeout(300)


def register(client: mlflow.MlflowClient, folder: Path) -> str:
    return register_folder(client, NAME, folder, "promote")


#: The calls promote makes to the promote_registry and the artifact store (directly or through
#: MLflow's own helpers): alias read, version reads, downloads, tag writes, alias moves.
REGISTRY_CALLS = (
    "get_model_version",
    "search_model_versions",
    "get_model_version_by_alias",
    "list_artifacts",
    "set_model_version_tag",
    "set_registered_model_alias",
    "delete_registered_model_alias",
)


class Faults:
    """Counts the promote_registry calls; the `fail_at`-th one (1-based) fails once, as a store
    that does not answer would (a 503 for the promote_registry, a full disk for a download)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.calls: list[str] = []
        self.fail_at = 0
        for name in REGISTRY_CALLS:
            method = getattr(mlflow.MlflowClient, name)
            monkeypatch.setattr(mlflow.MlflowClient, name, self.wrap(name, method))
        download = mlflow.artifacts.download_artifacts
        monkeypatch.setattr(mlflow.artifacts, "download_artifacts", self.wrap("download", download))

    def wrap(self, name, function):
        def call(*args, **kwargs):
            self.calls.append(name)
            if len(self.calls) == self.fail_at:
                raise self.failure(name)
            return function(*args, **kwargs)

        return call

    @staticmethod
    def failure(name: str) -> Exception:
        from mlflow.exceptions import MlflowException

        if name == "download":
            return OSError(28, "No space left on device")
        return MlflowException("503 Service Unavailable", error_code="TEMPORARILY_UNAVAILABLE")


def promote_exit(cfg: PromoteConfig, small_data: Path, capsys) -> tuple[int, str]:
    """promote as its entry point runs it: (exit status, stderr)."""
    from distrinews.errors import run_reporting

    data = DataConfig(data=str(small_data), max_eval_rows=50)
    code = run_reporting(lambda: run_promote(cfg, data))
    return code, capsys.readouterr().err


def alias_holder(client: mlflow.MlflowClient) -> str:
    return str(client.get_model_version_by_alias(NAME, "champion").version)


def reset(client: mlflow.MlflowClient, champion: str, candidate: str) -> None:
    client.set_registered_model_alias(NAME, "champion", champion)
    for key in client.get_model_version(NAME, candidate).tags:
        if key.startswith("promotion"):
            client.delete_model_version_tag(NAME, candidate, key)


@pytest.mark.parametrize("gate", ["refuses", "passes"])
def test_no_registry_failure_moves_the_alias_past_the_gate_or_splits_tags_and_alias(
    gate, promote_registry, tiny_onnx, small_data, tmp_path, monkeypatch, capsys
):
    """Each call fails once, in turn. Whatever fails, the alias stays on the champion or
    moves to a candidate that passed the whole gate; the candidate's `promotion` tag says
    promoted exactly when the alias holds it; a failure is one `error:` line, exit 2."""
    champion, candidate = (
        register(promote_registry, tiny_onnx),
        register(promote_registry, tiny_onnx),
    )
    with_production_slice(promote_registry, candidate, tmp_path)
    # Two copies of one model: a limit of 0 refuses (nothing shows the candidate better),
    # wide-open limits let it through.
    limits = {} if gate == "refuses" else OPEN
    cfg = PromoteConfig(version=candidate, latency_texts=3, max_p95_ms=1000, **limits)
    faults = Faults(monkeypatch)
    reset(promote_registry, champion, candidate)
    faults.calls = []
    clean_code, _ = promote_exit(cfg, small_data, capsys)
    assert clean_code == (0 if gate == "passes" else 2)
    calls = list(faults.calls)
    assert {"get_model_version_by_alias", "download", "set_model_version_tag"} <= set(calls)
    for fail_at in range(1, len(calls) + 1):
        reset(promote_registry, champion, candidate)
        faults.calls, faults.fail_at = [], fail_at
        code, err = promote_exit(cfg, small_data, capsys)
        faults.fail_at = 0
        failed = f"call {fail_at} ({calls[fail_at - 1]}) failing: {err[-500:]}"
        assert code in (0, 2) and "Traceback" not in err, f"{failed}: {err[-2000:]}"
        if code == 2:
            assert err.count("error:") == 1, f"{failed}: {err[-2000:]}"
        holder = alias_holder(promote_registry)
        assert holder in (champion, candidate if gate == "passes" else champion), failed
        tag = promote_registry.get_model_version(NAME, candidate).tags.get("promotion")
        assert (tag == "promoted") is (holder == candidate), f"{failed}: tag {tag}"
