"""Where a request's time goes, stage by stage (DISTRINEWS_STAGE_TIMING).

A prediction request passes marks (`time.perf_counter()` readings) as it goes: the
middleware's first look at it, the route's handler, the inference (start, tokens,
ONNX Runtime, softmax), the handler again, the answer sent, the
request's own metrics and access log done. Reading a clock costs about 0.1 µs, so
the marks are always taken; only with stage timing on do they become the histogram
`distrinews_stage_duration_seconds{stage}`, whose means say what each stage costs
in the running server (benchmarks/http_overhead.py reads them).
"""

import time
from collections.abc import MutableMapping

#: (stage, the mark it starts at, the mark it ends at), in the order a request meets them.
STAGES = (
    ("request read, parse and validation", "received", "handler"),
    ("hop to the inference thread", "handler", "inference"),
    ("tokenization", "inference", "tokenized"),
    ("ONNX Runtime", "tokenized", "model"),
    ("softmax and text features", "model", "scored"),
    ("hop back to the event loop", "scored", "resumed"),
    ("answer and prediction-log hand-off", "resumed", "answered"),
    ("JSON encoding and sending", "answered", "sent"),
    ("request metrics and access log (after sending)", "sent", "done"),
)

#: The inference thread's marks, in the order it takes them (serving.inference).
INFERENCE_MARKS = ("inference", "tokenized", "model", "scored")


def mark(state: MutableMapping, name: str) -> None:
    """Note that the request whose scope state is `state` has reached `name` now."""
    state.setdefault("marks", {})[name] = time.perf_counter()


def stage_seconds(marks: dict[str, float]) -> dict[str, float]:
    """Seconds per stage, for the stages whose two marks the request reached (a 4xx
    stops early; a request served from the queue has every mark)."""
    return {
        stage: marks[end] - marks[start]
        for stage, start, end in STAGES
        if start in marks and end in marks
    }
