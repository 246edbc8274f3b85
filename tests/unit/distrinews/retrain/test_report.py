"""What a retrain's parent run shows: its description and its comparison plot."""

from distrinews.retrain.report import comparison_figure, story_text
from distrinews.retrain.story import Story


def test_the_parent_page_tells_the_story():
    story = Story("promoted", "test accuracy 0.91 vs 0.90", "1", "2", ("a", "b"))
    text = story_text(story)
    assert text.startswith("**Decision: promoted.** test accuracy 0.91")
    assert "champion, version 1" in text


def test_the_comparison_plot_needs_both_models_scored():
    assert comparison_figure({}, "skipped") is None
    metrics = {f"retrain/{role}_test_accuracy": 0.9 for role in ("candidate", "champion")}
    figure = comparison_figure(metrics, "promoted")
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["test"]
