"""The retrain workflow: production feedback to a gated new champion, as one parent MLflow run
with a child run per step: monitor -> train (warm-started from the champion, on train plus
feedback) -> export -> promote.

The window starts where the last promoted retrain's ended (or at `since`, if later), so
feedback already learned is not trained on again; it ends at its start time (or `until`), and
every step reads [start, end). One retrain per registered model runs at a time: a second
refuses while the first is RUNNING. The new model's validation split is the champion's
(its train run's seed and val_fraction), so export fits the temperature and reference
profile on rows the warm-start weights never trained on.
"""

import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from distrinews.cli import step_command
from distrinews.config import RetrainJob
from distrinews.data.feedback import known_texts, read_feedback, usable_feedback, whole_data
from distrinews.data.time_window import parse_window
from distrinews.errors import UserError
from distrinews.mlflow_runs import check_tracking_server, log_new_params, step_run
from distrinews.promote.gate import champion_version
from distrinews.promote.registry import CHALLENGER, registry_call
from distrinews.retrain.child_runs import run_child
from distrinews.retrain.report import comparison_figure, story_metrics, story_text
from distrinews.retrain.story import Story
from distrinews.runtime.model_source import first_line
from distrinews.runtime.prediction_store import shown
from distrinews.signals import further_signals


@dataclass(frozen=True)
class ChampionSplit:
    """What decided the champion's validation split: its train run's seed and val_fraction."""

    seed: int
    val_fraction: float
    run_id: str  # the champion's train run


def run_retrain(job: RetrainJob) -> str:
    """The loop, in a parent run; returns what happened (a decision, not an error, when
    there is nothing to do or the gate refuses). UserError once recorded, if a step fails."""
    import mlflow

    check_tracking_server()
    story = Story()
    with step_run("retrain", f"retrain {job.name}") as parent:
        mlflow.set_tags({"registered_model": job.name, "decision": story.decision})
        refuse_if_running(parent, job.name, job.retrain.lock_hours)
        try:
            loop(job, parent, story)
        except KeyboardInterrupt:
            # A further signal must not cut the recording short: the run would end FAILED.
            with further_signals():
                story.decision, story.reason = "interrupted", "stopped before it decided"
                record(story)
                mlflow.end_run("KILLED")  # not FAILED: nothing went wrong, it was stopped
            raise
        except Exception as err:  # a step failed, or this process did: recorded, then raised
            story.decision, story.reason = "failed", str(err)
            record(story)
            raise
        record(story)
    return f"retrain {job.name}: {story.decision}: {story.reason}"


def loop(job: RetrainJob, parent: Any, story: Story) -> None:
    """Each step in turn, stopping (with the reason in `story`) where there is nothing more
    to do."""
    story.champion = champion_version(job.name) or ""
    if not story.champion:
        raise UserError(
            f"{job.name} has no champion to start from; train, export and promote a first model"
        )
    start, end = window(job)
    story.window = (start.isoformat(), end.isoformat())
    log_new_params(
        asdict(job.retrain)
        | {"store": shown(job.monitor.store), "window_start": story.window[0]}
        | {"window_end": story.window[1]}
    )
    if count_usable_feedback(job, start, end) == 0:
        story.decision = "skipped"
        story.reason = (
            f"no labelled feedback with text since {story.window[0]}: nothing to train on"
        )
        return
    split = champion_split(job.name, story.champion)
    log_split(split, story.champion)
    recommended, why = monitor(job, parent, story)
    if not (recommended or job.retrain.force):
        story.decision, story.reason = "not needed", f"the monitor sees no need ({why})"
        return
    story.reason = why if recommended else f"forced (the monitor: {why})"
    train_run = train(job, parent, story, split)
    story.candidate = export(job, parent, story, train_run)
    if job.retrain.rollout == "challenger":
        make_challenger(job.name, story)
    else:
        promote(job, parent, story, story.candidate)


def window(job: RetrainJob) -> tuple[datetime, datetime]:
    """[start, end) of the feedback and predictions: `since` .. `until` of the monitor
    settings, starting no earlier than where the last promoted retrain's window ended."""

    start, end = parse_window(job.monitor.since, job.monitor.until)
    # A window is learned once its model is promoted, or handed to a live rollout (whose
    # verdict, later, is promote's).
    for decision in ("promoted", CHALLENGER):
        runs = retrain_runs(
            job.name,
            f"tags.decision = '{decision}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if runs and (last_end := runs[0].data.params.get("window_end")):
            start = max(start, datetime.fromisoformat(last_end))
    if start >= end:  # nothing since the last promoted retrain
        start = end
    return start, end


def retrain_runs(name: str, condition: str, **options: Any) -> list:
    """The retrain runs of registered model `name`, in any experiment, that meet `condition`."""
    import mlflow

    return mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.step = 'retrain' and tags.registered_model = '{name}' and {condition}",
        output_format="list",
        **options,
    )


def count_usable_feedback(job: RetrainJob, start: datetime, end: datetime) -> int:
    """How many feedback rows of [start, end) the train step would learn from or hold out
    (its own rules)."""

    raw = read_feedback(job.monitor.store, start, end)
    if raw.empty:
        return 0
    whole = whole_data(job.data)  # its classes, and every text it holds: read once
    rows, _ = usable_feedback(raw, whole.labels, known_texts(whole))
    return len(rows)


def champion_split(name: str, version: str) -> ChampionSplit:
    """The seed and val_fraction of the train run behind `version` (its `source_run_id`
    tag). UserError if they cannot be read: with a guess, export could fit the temperature
    and profile on rows the warm-start weights trained on."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    run_id = ""
    try:
        run_id = client.get_model_version(name, version).tags.get("source_run_id", "")
        params = client.get_run(run_id).data.params if run_id else {}
    except MlflowException as err:
        raise unreadable_split(name, version, run_id, first_line(err)) from err
    try:
        return ChampionSplit(int(params["seed"]), float(params["val_fraction"]), run_id)
    except KeyError as err:
        raise unreadable_split(name, version, run_id, f"it has no {err.args[0]} param") from err
    except ValueError as err:
        raise unreadable_split(name, version, run_id, str(err)) from err


def unreadable_split(name: str, version: str, run_id: str, why: str) -> UserError:
    behind = f"train run {run_id}" if run_id else "train run (it has no source_run_id tag)"
    return UserError(
        f"cannot read the seed and val_fraction of {name} version {version}'s {behind}: {why}; "
        "retrain takes the champion's validation split, so that the new model is calibrated "
        "on rows the champion never trained on"
    )


def log_split(split: ChampionSplit, champion: str) -> None:
    """Say on the parent run which seed and val_fraction the train step gets, and why."""
    import mlflow

    log_new_params({"seed": split.seed, "val_fraction": split.val_fraction})
    mlflow.set_tag(
        "seed_from",
        f"the champion's (version {champion}) train run {split.run_id}: the same validation "
        "rows, which its weights never trained on, so export's temperature and reference "
        "profile are fitted on unseen rows",
    )


def refuse_if_running(parent: Any, name: str, lock_hours: float) -> None:
    """UserError if an earlier retrain of `name` is still RUNNING (and not stale)."""

    oldest = datetime.now(timezone.utc) - timedelta(hours=lock_hours)
    others = [
        run
        for run in retrain_runs(name, "attributes.status = 'RUNNING'")
        if run.info.run_id != parent.info.run_id
        and run.info.start_time >= oldest.timestamp() * 1000
        and (run.info.start_time, run.info.run_id) < (parent.info.start_time, parent.info.run_id)
    ]
    if others:
        first = others[0].info
        started = datetime.fromtimestamp(first.start_time / 1000, timezone.utc)
        raise UserError(
            f"another retrain of {name} is running (run {first.run_id}, started "
            f"{started.isoformat(timespec='seconds')}); wait for it to end. If it was killed "
            f"without ending its run, it stops blocking after lock_hours={lock_hours:g}"
        )


def child(step: str, command: list[str], parent: Any, story: Story) -> Any:
    """Run one step as a child run; its run, or UserError naming it if it failed."""
    status, run = run_child(step, command, parent)
    story.children[step] = run
    if status != 0 and not (step == "promote" and run.data.tags.get("decision")):
        error = run.data.tags.get("error", f"exit status {status}")
        raise UserError(f"the {step} step failed (run {run.info.run_id}): {error}")
    return run


def monitor(job: RetrainJob, parent: Any, story: Story) -> tuple[bool, str]:
    """The monitor step over the window: (retrain recommended?, why)."""
    cfg = job.monitor
    command = step_command(
        "monitor",
        store=cfg.store,
        since=story.window[0],
        until=story.window[1],
        registered_model=job.name,
        max_drift=cfg.max_drift,
        min_live_accuracy=cfg.min_live_accuracy,
        min_feedback=cfg.min_feedback,
        min_estimated_accuracy=cfg.min_estimated_accuracy,
        max_domain_auc=cfg.max_domain_auc,
    )
    try:
        tags = child("monitor", command, parent, story).data.tags
    except UserError as err:
        # Feedback can come long after its predictions, past the window's start: with
        # force, a monitor that cannot judge the window does not stop the retrain.
        if not job.retrain.force:
            raise
        return False, f"the monitor failed: {err}"
    return tags.get("retrain_recommended") == "true", tags.get("retrain_reason", "")


def train(job: RetrainJob, parent: Any, story: Story, split: ChampionSplit) -> Any:
    """A warm start from the champion's train run, on train plus the window's feedback, with
    the champion's validation split."""
    data, train_cfg = job.data, job.train
    command = step_command(
        "train",
        job.retrain.nproc,
        data=data.data,
        max_length=data.max_length,
        val_fraction=split.val_fraction,
        max_train_rows=data.max_train_rows,
        max_eval_rows=data.max_eval_rows,
        init_from=f"models:/{job.name}/{story.champion}",
        feedback=job.monitor.store,
        feedback_since=story.window[0],
        feedback_until=story.window[1],
        production_share=job.feedback.production_share,
        epochs=job.retrain.epochs,
        lr=job.retrain.lr,
        batch_size=train_cfg.batch_size,
        seed=split.seed,
        output_dir=train_cfg.output_dir,
    )
    return child("train", command, parent, story)


def export(job: RetrainJob, parent: Any, story: Story, train_run: Any) -> str:
    """The int8 export of the new model, registered: its version."""
    command = step_command(
        "export",
        run_id=train_run.info.run_id,
        data=job.data.data,
        max_eval_rows=job.data.max_eval_rows,
        registered_model=job.name,
        max_accuracy_drop=job.retrain.max_int8_drop,
        latency_texts=job.promote.latency_texts,
    )
    run = child("export", command, parent, story)
    import mlflow

    # The version export registered is the one logged by its run.
    (version,) = mlflow.MlflowClient().search_model_versions(
        f"name = '{job.name}' and run_id = '{run.info.run_id}'"
    )
    return str(version.version)


def promote(job: RetrainJob, parent: Any, story: Story, version: str) -> None:
    """The gate on test and production; the decision becomes the story's."""
    cfg = job.promote
    command = step_command(
        "promote",
        version=version,
        registered_model=job.name,
        max_accuracy_drop=cfg.max_accuracy_drop,
        max_production_drop=cfg.max_production_drop,
        max_p95_ms=cfg.max_p95_ms,
        max_budget_drop=cfg.max_budget_drop,
        latency_texts=cfg.latency_texts,
        data=job.data.data,
        max_eval_rows=job.data.max_eval_rows,
    )
    tags = child("promote", command, parent, story).data.tags
    story.decision, story.reason = tags["decision"], tags["reason"]


def make_challenger(name: str, story: Story) -> None:
    """Point `challenger` at the new version: it is judged on live traffic before it serves
    everyone (docs/rollout.md)."""
    import mlflow

    with registry_call(f"point {name}@{CHALLENGER} at version {story.candidate}"):
        mlflow.MlflowClient().set_registered_model_alias(name, CHALLENGER, story.candidate)
    story.decision = CHALLENGER
    story.reason = (
        f"version {story.candidate} is {name}@{CHALLENGER} (the champion is still version "
        f"{story.champion}): serve it with DISTRINEWS_CHALLENGER=models:/{name}@{CHALLENGER} "
        "and a shadow or canary share, then promote -P live_window=<span> judges it"
    )


def record(story: Story) -> None:
    """The decision and the children's key figures on the parent run, and its page's text."""
    import mlflow

    tags = {"decision": story.decision, "reason": story.reason[:5000]}
    tags |= {f"{step}_run_id": run.info.run_id for step, run in story.children.items()}
    tags |= {"champion_version": story.champion, "candidate_version": story.candidate}
    tags["mlflow.note.content"] = story_text(story)
    mlflow.set_tags(tags)
    if metrics := story_metrics(story):
        mlflow.log_metrics(metrics)
    if (figure := comparison_figure(metrics, story.decision)) is not None:
        mlflow.log_figure(figure, "retrain/comparison.png")
    print(f"retrain: {story.decision}: {story.reason}", file=sys.stderr)
