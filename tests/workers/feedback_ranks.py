"""Run under torchrun: the training's feedback read, with a feedback item arriving after
rank 0 has read the log. Each rank writes the rows it would train on and hold out to
<result>.<rank>.json.

    torchrun --nproc-per-node 2 -m tests.workers.feedback_ranks <log> <data> <output dir> <result>
"""

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from distrinews.config import (
    DataConfig,
    FeedbackConfig,
    ModelConfig,
    TrackingConfig,
    TrainConfig,
    TrainingJob,
)
from distrinews.runtime.labels import LABELS
from distrinews.runtime.prediction_store import FEEDBACK, open_store
from distrinews.train.distributed import (
    DistInfo,
    barrier,
    broadcast_from_main,
    cleanup_distributed,
    setup_distributed,
)
from distrinews.train.loop import main_reads_feedback


def arrive(url: str) -> None:
    """One more feedback item, as a server would write it while training starts."""
    engine = open_store(url)
    with engine.begin() as connection:
        row = {"time": datetime.now(timezone.utc), "request_id": "late", "position": 0}
        connection.execute(FEEDBACK.insert(), row | {"label": "World", "text": "A late story"})
    engine.dispose()


def main(url: str, data: str, output_dir: str, result: str) -> None:
    info = DistInfo.from_env()
    setup_distributed(info, threads=1)
    feedback = FeedbackConfig(feedback=url, production_share=0.3)
    train = TrainConfig(output_dir=output_dir)
    job = TrainingJob(DataConfig(data=data), ModelConfig(), train, TrackingConfig(), feedback)
    try:
        read = main_reads_feedback(job, LABELS, info, "run-1")
        barrier(info)
        if info.rank == 1:
            arrive(url)
        barrier(info)
        rows = broadcast_from_main(read, info)
        record = {
            "feedback": sorted(rows.feedback["text"]),
            "production": sorted(rows.production["text"]),
        }
        Path(f"{result}.{info.rank}.json").write_text(json.dumps(record))
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main(*sys.argv[1:])
