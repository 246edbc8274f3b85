"""The predict step: every row of a file or folder of news scored by one model version, a
Parquet output per input file, and an MLflow run of what was scored. Torch-free: it runs the
server's ONNX Runtime classifier.

Resumable: an output is written whole or not at all (`batch_files`), and a rerun keeps the
outputs that the same model version wrote. A row that is not a text is answered with an
empty label and its error, and counted; it never stops the run.
"""

import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from distrinews.batch_files import (
    BatchFile,
    count_rows,
    find_inputs,
    read_input,
    remove_partials,
    scored_by,
    write_atomically,
)
from distrinews.batch_scorer import Scorer
from distrinews.config import PredictConfig
from distrinews.errors import ModelFolderError, UserError
from distrinews.progress import progress_bar
from distrinews.runtime.model_source import ModelSource, local_model_folder, resolve_source
from distrinews.runtime.table_scoring import ERROR, LABEL, answer_columns
from distrinews.signals import raise_on_sigterm


@dataclass
class FileResult:
    """What became of one input file."""

    input: str
    output: str
    status: str  # "scored", or "kept" (scored by this model version before)
    rows: int = 0
    bad_rows: int = 0
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)  # bad rows by reason
    renamed: dict[str, str] = field(default_factory=dict)  # input columns kept under new names


@dataclass
class BatchTotals:
    """What the run scored, across its files."""

    files: list[FileResult] = field(default_factory=list)
    labels: Counter = field(default_factory=Counter)  # predicted label -> rows
    confidence_sum: float = 0.0

    @property
    def scored(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "scored"]

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.scored)

    @property
    def bad_rows(self) -> int:
        return sum(f.bad_rows for f in self.scored)

    @property
    def seconds(self) -> float:
        return sum(f.seconds for f in self.scored)

    def label_shares(self, labels: tuple[str, ...]) -> np.ndarray:
        """The share of each label among the scored texts, in `labels`' order."""
        counts = np.array([self.labels.get(label, 0) for label in labels], dtype=np.float64)
        return counts / max(1.0, counts.sum())


def model_record(source: ModelSource) -> dict[str, str | None]:
    """What an output records of the model that scored it (an alias is pinned to its version)."""
    return {
        "model": source.uri,
        "registered_model": source.registered_model,
        "version": source.version,
    }


def plan(batch: list[BatchFile], record: dict, overwrite: bool) -> list[BatchFile]:
    """The files to score: those without an output, and all of them with `overwrite`.
    UserError for an output another model wrote, rather than mixing two models' answers."""
    todo = []
    for item in batch:
        if overwrite or not item.output.exists():
            todo.append(item)
            continue
        earlier = scored_by(item.output)
        if earlier is None or earlier.get("model") != record["model"]:
            by = earlier["model"] if earlier else "something else"
            raise UserError(
                f"{item.output} exists, scored by {by}, not {record['model']}; pass "
                "-P overwrite=true to score it again, or choose another -P output= folder"
            )
    return todo


#: An input column named like an answer column is kept under this prefix.
INPUT_PREFIX = "input_"


def keep_clashing_columns(
    frame: pd.DataFrame, answers: list[str]
) -> tuple[pd.DataFrame, dict[str, str]]:
    """`frame` with its columns named like an answer column (a labelled file's `label`)
    renamed `input_<name>`, so both are kept; and the renames, which are printed."""
    renamed = {c: f"{INPUT_PREFIX}{c}" for c in frame.columns if c in answers}
    taken = set(renamed.values()) & set(map(str, frame.columns))
    if taken:
        raise UserError(
            f"the input has the columns {', '.join(sorted(renamed))} that predict writes, and "
            f"{', '.join(sorted(taken))} too; rename one of them"
        )
    for old, new in renamed.items():
        print(f"note: the input's column {old!r} is kept as {new!r}", file=sys.stderr)
    return frame.rename(columns=renamed), renamed


def score_file(
    item: BatchFile, scorer: Scorer, cfg: PredictConfig, record: dict, totals: BatchTotals, bar
) -> FileResult:
    """Read, score and write one file; its rows' labels and confidences go into `totals`."""
    start = time.perf_counter()
    frame = read_input(item.input, cfg.text_column)
    values = frame[cfg.text_column].tolist()
    columns = answer_columns(scorer.labels)
    frame, renamed = keep_clashing_columns(frame, columns)
    parts = []
    for part in scorer.score(values):
        parts.append(part)
        bar.update(len(part))
    answers = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    write_atomically(pd.concat([frame.reset_index(drop=True), answers], axis=1), item, record)
    good = answers[answers[ERROR].isna()]
    totals.labels.update(good[LABEL].tolist())
    totals.confidence_sum += float(good["confidence"].sum())
    errors = Counter(answers[ERROR].dropna().tolist())
    return FileResult(
        str(item.input),
        str(item.output),
        "scored",
        len(frame),
        int(sum(errors.values())),
        time.perf_counter() - start,
        dict(errors),
        renamed,
    )


def score_files(
    batch: list[BatchFile], todo: list[BatchFile], cfg: PredictConfig, folder: Path, record: dict
) -> BatchTotals:
    """Score every file of `todo` with every CPU; the others are kept as they are."""
    totals = BatchTotals()
    rows = sum(count_rows(item.input, cfg.text_column) for item in todo)
    try:
        scorer = Scorer(folder, cfg.processes, cfg.max_text_chars)
    except ModelFolderError as err:  # downloaded, but not a model ONNX Runtime can open
        raise UserError(f"{err}; pass -P model=<an exported version or folder>") from err
    with scorer:
        bar = progress_bar(rows, "predict", enabled=rows > 0)
        try:
            for item in batch:
                if item in todo:
                    totals.files.append(score_file(item, scorer, cfg, record, totals, bar))
                else:
                    totals.files.append(FileResult(str(item.input), str(item.output), "kept"))
        finally:
            bar.close()
    return totals


def open_model(model: str, into: Path) -> tuple[ModelSource, Path]:
    """The model's source (an alias pinned to its version) and its local ONNX folder."""
    try:
        source = resolve_source(model)
        return source, local_model_folder(source, into=into)
    except ModelFolderError as err:
        raise UserError(f"{err}; pass -P model=<a registered version, run URI or folder>") from err


def run_predict(cfg: PredictConfig) -> str:
    """Score every input file not already scored by this model; log the run to MLflow."""
    from distrinews.batch_report import log_batch_run
    from distrinews.mlflow_runs import check_tracking_server

    raise_on_sigterm()  # a stopped run ends KILLED, its partial output deleted
    check_tracking_server()
    batch = find_inputs(cfg.input, cfg.output)
    with tempfile.TemporaryDirectory(prefix="distrinews-predict-") as work:
        source, folder = open_model(cfg.model, Path(work))
        record = model_record(source)
        todo = plan(batch, record, cfg.overwrite)
        with log_batch_run(cfg, source, batch, folder) as finish:
            removed = remove_partials(Path(cfg.output))
            totals = score_files(batch, todo, cfg, folder, record)
            finish(totals, len(removed))
    rate = totals.rows / totals.seconds if totals.seconds else 0.0
    return (
        f"{len(totals.scored)} file(s) scored ({totals.rows} rows, {totals.bad_rows} not "
        f"texts, {rate:.0f} rows/s), {len(batch) - len(totals.scored)} kept; output in "
        f"{cfg.output}"
    )
