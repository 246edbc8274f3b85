"""What a retrain's parent run shows: its steps' key figures as `retrain/` metrics, and a
description (the run page's text) that says why it ran, what it trained on and what the
gate decided."""

from typing import TYPE_CHECKING, Any

from distrinews.retrain.story import Story

if TYPE_CHECKING:
    from matplotlib.figure import Figure


#: Figures copied from a child run onto the parent: (step, metric or param) -> parent key.
COPIED = {
    ("monitor", "monitor/live_accuracy"): "live_accuracy",
    ("monitor", "monitor/feedback_items"): "monitor_feedback_items",
    ("train", "feedback_rows"): "feedback_rows",
    ("train", "production_rows"): "production_rows",
    ("train", "train_rows"): "train_rows",
    ("promote", "candidate/accuracy"): "candidate_test_accuracy",
    ("promote", "champion/accuracy"): "champion_test_accuracy",
    ("promote", "candidate/production_accuracy"): "candidate_production_accuracy",
    ("promote", "champion/production_accuracy"): "champion_production_accuracy",
}


def step_seconds(run: Any) -> float | None:
    info = run.info
    return (info.end_time - info.start_time) / 1000 if info.end_time else None


def story_metrics(story: Story) -> dict[str, float]:
    """`retrain/` metrics: each step's wall time and the copied figures."""
    metrics = {}
    for step, run in story.children.items():
        if (seconds := step_seconds(run)) is not None:
            metrics[f"retrain/{step}_seconds"] = seconds
    for (step, key), name in COPIED.items():
        if step in story.children:
            data = story.children[step].data
            value = data.metrics.get(key, data.params.get(key))
            if value is not None:
                metrics[f"retrain/{name}"] = float(value)
    return metrics


def story_text(story: Story) -> str:
    """The parent run's description, in Markdown."""
    metrics = story_metrics(story)
    lines = [
        f"**Decision: {story.decision}.** {story.reason}",
        "",
        f"- Window: {story.window[0] or '?'} to {story.window[1] or '?'}; started from the "
        f"champion, version {story.champion or 'none'}.",
    ]
    if "retrain/feedback_rows" in metrics:
        lines.append(
            f"- Trained on {metrics['retrain/train_rows']:.0f} rows, "
            f"{metrics['retrain/feedback_rows']:.0f} of them feedback; "
            f"{metrics['retrain/production_rows']:.0f} feedback rows held out as `production`."
        )
    pairs = (("test", "test_accuracy"), ("production", "production_accuracy"))
    for split, key in pairs:
        candidate, champion = (
            metrics.get(f"retrain/{role}_{key}") for role in ("candidate", "champion")
        )
        if candidate is not None and champion is not None:
            lines.append(f"- {split} accuracy: candidate {candidate:.4f}, champion {champion:.4f}.")
    steps = ", ".join(
        f"{step} {seconds:.0f} s"
        for step in story.children
        if (seconds := metrics.get(f"retrain/{step}_seconds")) is not None
    )
    if steps:
        lines.append(f"- Steps (child runs): {steps}.")
    return "\n".join(lines)


def comparison_figure(metrics: dict[str, float], decision: str) -> "Figure | None":
    """Champion and candidate side by side on test and production (None: not scored)."""
    splits = [
        split
        for split in ("test", "production")
        if f"retrain/candidate_{split}_accuracy" in metrics
        and f"retrain/champion_{split}_accuracy" in metrics
    ]
    if not splits:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for offset, role in ((-0.2, "champion"), (0.2, "candidate")):
        values = [metrics[f"retrain/{role}_{split}_accuracy"] for split in splits]
        bars = ax.bar([i + offset for i in range(len(splits))], values, width=0.4, label=role)
        ax.bar_label(bars, fmt="%.3f")
    ax.set_xticks(range(len(splits)), splits)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"retrain: {decision}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig
