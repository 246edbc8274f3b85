"""The model a train run logged to MLflow: its id, and the model loaded back (export, evaluate)."""

from typing import Any

from distrinews.errors import UserError
from distrinews.train.model import match_inputs_to_model


def logged_model_id(run_id: str) -> str:
    """The id of the model a train run logged (its newest, if several)."""
    import mlflow

    outputs = mlflow.MlflowClient().get_run(run_id).outputs
    models = sorted(outputs.model_outputs if outputs else [], key=lambda m: m.step)
    if not models:
        raise UserError(f"run {run_id} has no logged model; pass the id of a FINISHED train run")
    return models[-1].model_id


def load_logged_model(run_id: str) -> tuple[Any, Any, Any]:
    """(model, tokenizer, run) of a train run's logged transformers model."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        run = mlflow.MlflowClient().get_run(run_id)
        components = mlflow.transformers.load_model(
            f"models:/{logged_model_id(run_id)}", return_type="components"
        )
    except (MlflowException, OSError) as err:
        raise UserError(
            f"cannot load the model of run {run_id!r} from {mlflow.get_tracking_uri()} "
            f"({str(err).splitlines()[0]}); pass the id of a FINISHED train run"
        ) from err
    model, tokenizer = components["model"], components["tokenizer"]
    match_inputs_to_model(tokenizer, model)
    return model, tokenizer, run
