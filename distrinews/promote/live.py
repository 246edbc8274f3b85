"""Live evidence for the gate (`-P live_window=`): the candidate served beside the champion,
as a challenger in shadow or as a canary, judged on the texts both scored in the window.

Four conditions, each with the numbers that decided it in the reason: enough texts scored
by both (min_live_requests); agreement with the champion shown to be above min_agreement
(Wilson's interval); a p95 inference time on the serving CPU, as the server logged it,
within max_p95_ms; and no worse on the window's feedback by more than
max_live_accuracy_drop points (Newcombe's paired interval, as for the offline evidence).
"""

import math

from distrinews.config import PromoteConfig
from distrinews.data.live_pairs import LiveComparison, read_pairs, summarize
from distrinews.data.time_window import parse_window
from distrinews.errors import UserError
from distrinews.promote.registry import CHALLENGER, alias_holder


def live_candidate(name: str) -> str:
    """The version `challenger` points to: what a promotion on live evidence promotes."""
    if (version := alias_holder(name, CHALLENGER)) is None:
        raise UserError(
            f"{name}@{CHALLENGER} is not set: a live promotion judges the challenger; set the "
            "alias (retrain -P rollout=challenger does), or pass -P version="
        )
    return version


def live_comparison(
    cfg: PromoteConfig, name: str, versions: dict[str, str], labels: tuple[str, ...]
) -> LiveComparison:
    """The candidate against the champion on the texts both scored in the window."""
    if "champion" not in versions:
        raise UserError(
            f"{name} has no champion to compare with on live traffic; promote a first "
            "champion without -P live_window="
        )
    start, end = parse_window(cfg.live_window, "")
    pairs = read_pairs(cfg.live_store, start, end, name)
    mine = pairs[
        (pairs["champion_version"] == versions["champion"])
        & (pairs["challenger_version"] == versions["candidate"])
    ]
    return summarize(mine, versions["champion"], versions["candidate"], list(labels))


def live_refusal(cfg: PromoteConfig, live: LiveComparison) -> str | None:
    """Why the live evidence refuses the candidate before its accuracy is weighed; None if
    it does not."""
    where = f"version {live.challenger} beside champion version {live.champion}"
    if live.texts < cfg.min_live_requests:
        return (
            f"live: {live.texts} texts scored by {where} in live_window={cfg.live_window}, "
            f"under min_live_requests={cfg.min_live_requests}: serve it in shadow longer"
        )
    low, high = live.agreement_interval()
    if low < cfg.min_agreement:
        return (
            f"live: agreement with the champion {live.agreement:.4f} (95% interval "
            f"[{low:.4f}, {high:.4f}]) on {live.texts} texts is not shown to be above "
            f"min_agreement={cfg.min_agreement:g}"
        )
    p95 = live.p95_ms["challenger"]
    if not math.isnan(p95) and p95 > cfg.max_p95_ms:
        return (
            f"live: p95 inference {p95:.1f} ms on the serving CPU is over "
            f"max_p95_ms={cfg.max_p95_ms:g}"
        )
    if not live.labelled.rows:
        return (
            f"live: no feedback on the {live.texts} texts scored by {where}: label some "
            "(POST /feedback) to judge its accuracy"
        )
    return None


def live_metrics(live: LiveComparison) -> dict[str, float]:
    """The promote run's `live/*` metrics besides the paired comparison's."""
    low, high = live.agreement_interval()
    metrics = {
        "live/texts": live.texts,
        "live/canary_texts": live.canary,
        "live/agreement": live.agreement,
        "live/agreement_low": low,
        "live/agreement_high": high,
    }
    for role, p95 in live.p95_ms.items():
        if not math.isnan(p95):
            metrics[f"live/{role}_p95_ms"] = p95
    for role, accuracy in live.accuracies().items():
        metrics[f"live/{role}_accuracy"] = accuracy
    return {key: value for key, value in metrics.items() if not math.isnan(value)}
