"""Where the time goes: one training step and one serving request, part by part.

Training: our pipeline's 2-process gloo set-up (this script relaunches itself
under torchrun). Each timed step runs its parts one after another, with the
gradient all-reduce taken out of backward (`no_sync`) and done explicitly, so
each part has its own time; the step as the pipeline runs it (DDP overlapping
all-reduce with backward) is timed too. Tokenization happens once up front in
the pipeline; its cost per batch is shown for scale.

Serving: the parts of one `/predict` request, in process (request parsing,
tokenization, ONNX Runtime, building and serializing the answer), and the
remainder of the HTTP round trip measured on a real server (uvicorn,
FastAPI routing, the thread hop, the client).

    python -m benchmarks.time_breakdown --model <int8 folder>
"""

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.common import DATA, REPO, ag_news_test_texts, one_client, record
from distrinews.config import DEFAULT_MODEL

if TYPE_CHECKING:  # torch loads only in the workers
    from distrinews.train.loop import TrainState

#: The step exactly as training runs it: `distrinews.train.loop.train_step`.
WHOLE_STEP = "whole step as the pipeline runs it (train_step; DDP overlaps the all-reduce)"


class Stopwatch:
    """Per-part lists of milliseconds."""

    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = {}

    @contextmanager
    def part(self, name: str):
        start = time.perf_counter()
        yield
        self.ms.setdefault(name, []).append(1000 * (time.perf_counter() - start))

    def medians(self, skip: int = 0) -> dict[str, float]:
        return {name: statistics.median(ms[skip:]) for name, ms in self.ms.items()}


def train_worker(args: argparse.Namespace) -> None:
    """Runs on every rank under torchrun; rank 0 writes the medians to args.result."""
    import torch

    from distrinews.config import DataConfig, TrainConfig
    from distrinews.data.splits import load_splits
    from distrinews.train.distributed import DistInfo, cleanup_distributed, setup_distributed
    from distrinews.train.loaders import TokenizedDataset, make_loader
    from distrinews.train.loop import make_train_state, train_step
    from distrinews.train.model import load_model_and_tokenizer

    info = DistInfo.from_env()
    setup_distributed(info, threads=0)
    cfg = TrainConfig()
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_model_and_tokenizer(args.train_model)
    data = DataConfig(data=args.data, max_train_rows=args.rows)
    train = load_splits(data, cfg.seed).train
    dataset = TokenizedDataset(train, tokenizer, data.max_length)
    loader = make_loader(dataset, tokenizer, cfg.batch_size, info.world_size, info.rank, cfg.seed)
    # The pipeline's own set-up: DDP wrapping, row sync, AdamW, schedule.
    state = make_train_state(model, cfg, info, steps_per_epoch=args.steps)
    texts = train["text"].tolist()
    batches = (batch for _ in itertools.count() for batch in loader)  # endless
    watch = Stopwatch()
    for step in range(args.steps):
        batch_texts = texts[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        with watch.part("tokenization (up front in the pipeline)"):
            tokenizer(batch_texts, truncation=True, max_length=data.max_length)
        with watch.part("batch collation and padding"):
            batch = next(batches)
        step_in_parts(state, batch, watch)
    state.optimizer.zero_grad(set_to_none=True)
    for _ in range(args.steps):
        batch = next(batches)
        with watch.part(WHOLE_STEP):
            train_step(state, [batch])
    if info.is_main:
        Path(args.result).write_text(json.dumps(watch.medians(skip=2)))
    # DDP first: the process group freed from DDP's side keeps the GIL while
    # it waits for gloo's threads, which may need the GIL (a hang; the
    # pipeline frees DDP when _train returns, before this teardown too).
    del state
    cleanup_distributed()


def step_in_parts(state: "TrainState", batch: dict, watch: Stopwatch) -> None:
    """`train_step`'s work, part by part: the all-reduce taken out of backward and timed alone."""
    import torch
    import torch.distributed as dist

    from distrinews.train.model import autocast

    info, cfg, rows = state.info, state.cfg, state.embedding_rows
    params = [p for p in state.model.parameters() if p.requires_grad]
    # What DDP all-reduces whole; the word embedding goes by rows when the pipeline does so.
    dense = [p for p in params if not rows or p is not rows.weight]
    with state.ddp_model.no_sync():
        with watch.part("forward"), autocast(info.device, cfg.precision):
            loss = state.ddp_model(**batch).loss
        with watch.part("backward"):
            loss.backward()
    with watch.part("gradient all-reduce (gloo)"):
        flat = torch.cat([p.grad.reshape(-1) for p in dense])
        dist.all_reduce(flat)
        flat /= info.world_size
        offset = 0
        for p in dense:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        if rows:
            rows.record(batch["input_ids"])
            rows.all_reduce()
    with watch.part("clipping and optimizer step"):
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        state.optimizer.step()
        state.optimizer.zero_grad(set_to_none=False)


def training_parts(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as work:
        result = Path(work) / "train.json"
        command = ["torchrun", "--standalone", "--nproc-per-node", "2"]
        command += ["-m", "benchmarks.time_breakdown", "--train-worker"]
        command += ["--result", str(result), "--data", args.data, "--rows", str(args.rows)]
        command += ["--steps", str(args.steps), "--train-model", args.train_model]
        subprocess.run(command, cwd=REPO, check=True, timeout=1800)
        return json.loads(result.read_text())


def serving_parts(args: argparse.Namespace) -> dict[str, float]:
    """Mean ms of each stage of `POST /predict` in the real server (its stage histogram,
    DISTRINEWS_STAGE_TIMING), and what the client sees beyond the app's part."""
    import httpx

    from benchmarks.http_overhead import stage_means
    from devkit.servers import Server
    from serving.stages import STAGES

    texts = ag_news_test_texts(args.data)[: args.requests]
    server = Server(args.model, dict(os.environ), stage_timing=True)
    try:
        server.wait_ready(timeout=120)
        # No warm-up of our own (the server warms its model before it is ready): the
        # histogram's means and the client's are then over the same requests.
        client = one_client(server.url, texts)
        stages = stage_means(httpx.get(f"{server.url}/metrics", timeout=10).text)
    finally:
        server.stop()
    parts = {name: stages.get(f"stage:{name}", 0.0) for name, *_ in STAGES[:-1]}
    parts["uvicorn (HTTP parsing, sockets) and the client"] = max(
        0.0, client["mean"] - sum(parts.values())
    )
    return parts


def share_table(
    title: str, parts: dict[str, float], unshared: tuple[str, ...] = (), statistic: str = "median"
) -> list[str]:
    """Parts by time taken; `unshared` rows are shown for scale, outside the shares."""
    total = sum(ms for name, ms in parts.items() if name not in unshared)
    lines = [f"| {title} | ms ({statistic}) | share |", "| --- | --- | --- |"]
    for name, ms in sorted(parts.items(), key=lambda item: -item[1]):
        share = "" if name in unshared else f"{100 * ms / total:.0f}%"
        lines.append(f"| {name} | {ms:.2f} | {share} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="exported int8 ONNX folder (serving part)")
    parser.add_argument("--train-model", default=DEFAULT_MODEL)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--rows", type=int, default=2560)
    parser.add_argument("--steps", type=int, default=12, help="timed training steps")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "time_breakdown.md")
    parser.add_argument("--train-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.train_worker:
        train_worker(args)
        return 0

    unshared = (
        WHOLE_STEP,
        "tokenization (up front in the pipeline)",
    )
    training = training_parts(args)
    serving = serving_parts(args)
    lines = [
        f"Training step: `{args.train_model}`, batch 32 per process, 2 processes x 1 thread, "
        f"gloo, the pipeline's default precision; medians over {args.steps - 2} steps. "
        "Shares are of the step's parts run one "
        "after another; tokenization and the real overlapped step are shown for scale.",
        "",
        *share_table("training part", training, unshared),
        "",
        f"Serving request: `POST /predict`, one text, int8 MiniLM, server defaults; means "
        f"over {args.requests} AG News test texts from the server's own stage histogram "
        "(DISTRINEWS_STAGE_TIMING; the access log, written after the answer is sent, apart); "
        "uvicorn and the client: the client's mean minus the stages'.",
        "",
        *share_table("serving part", serving, statistic="mean"),
    ]
    record(
        "time_breakdown",
        "Where the time goes",
        "\n".join(lines) + "\n",
        args.output,
        {f"train_{k.split(' ')[0]}_ms": v for k, v in training.items()},
        experiment=args.experiment,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
