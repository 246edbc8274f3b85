"""The predict step: every row of a file or folder of news scored by one model version, a
Parquet output per input file, and an MLflow run of what was scored. Torch-free: it runs the
server's ONNX Runtime classifier.

Resumable: an output is written whole or not at all (`files`), and a rerun keeps the
outputs that the same model version wrote from the same input bytes and settings; an input
that changed is scored again (`plan`). A row that is not a text is answered with an
empty label and its error, and counted; it never stops the run.
"""

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from distrinews.config import PredictConfig
from distrinews.errors import ModelFolderError, UserError
from distrinews.mlflow_runs import check_tracking_server
from distrinews.predict.files import (
    BatchFile,
    count_rows,
    file_sha256,
    find_inputs,
    read_input,
    remove_partials,
    scored_by,
    write_atomically,
)
from distrinews.predict.report import log_batch_run
from distrinews.predict.scorer import Scorer
from distrinews.predict.totals import BatchTotals, FileResult
from distrinews.progress import progress_bar
from distrinews.runtime.model_source import ModelSource, local_model_folder, resolve_source
from distrinews.runtime.table_scoring import ERROR, LABEL, answer_columns
from distrinews.signals import raise_on_sigterm


def model_record(source: ModelSource) -> dict[str, str | None]:
    """What an output records of the model that scored it (an alias is pinned to its version)."""
    return {
        "model": source.uri,
        "registered_model": source.registered_model,
        "version": source.version,
    }


#: The settings that change an output's answers, besides the model and the input's bytes.
ANSWER_SETTINGS = ("text_column", "max_text_chars")
#: Why a file is kept: what its output records matches this run.
KEPT = "scored by this model version from the same input and settings"


def input_fingerprint(path: Path, cfg: PredictConfig) -> dict:
    """What an output records of its input: the file's content hash and the settings that
    change its answers (a re-export of the same rows at the same path hashes the same)."""
    return {"sha256": file_sha256(path)} | {name: getattr(cfg, name) for name in ANSWER_SETTINGS}


def rescore_reason(earlier: dict | None, now: dict) -> str | None:
    """Why an output this model wrote must be scored again, None if it may be kept."""
    if earlier is None:
        return "its output records no input fingerprint (written by an older predict)"
    if earlier.get("sha256") != now["sha256"]:
        return "the input changed since it was scored"
    changed = [
        f"{name} changed ({earlier.get(name)!r} -> {now[name]!r})"
        for name in ANSWER_SETTINGS
        if earlier.get(name) != now[name]
    ]
    return ", ".join(changed) or None


def plan(batch: list[BatchFile], record: dict, cfg: PredictConfig) -> dict[BatchFile, str]:
    """The files to score, each with why: those without an output, those whose input or
    answer settings changed since this model scored them, and all with `overwrite`.

    UserError for an output another model wrote, whether or not its input changed: scoring
    it again would replace that version's answers, or mix two models in one folder."""
    todo = {}
    for item in batch:
        if not item.output.exists():
            todo[item] = "no output yet"
            continue
        if cfg.overwrite:
            todo[item] = "overwrite=true"
            continue
        earlier = scored_by(item.output)
        if earlier is None or earlier.get("model") != record["model"]:
            by = earlier["model"] if earlier else "something else"
            raise UserError(
                f"{item.output} exists, scored by {by}, not {record['model']}; pass "
                "-P overwrite=true to score it again, or choose another -P output= folder"
            )
        if reason := rescore_reason(earlier.get("input"), input_fingerprint(item.input, cfg)):
            todo[item] = reason
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
    # Hashed before it is read: a file that changes in between is scored again next run.
    record = record | {"input": input_fingerprint(item.input, cfg)}
    frame = read_input(item.input, cfg.text_column)
    values = frame[cfg.text_column].tolist()
    columns = answer_columns(scorer.labels)
    frame, renamed = keep_clashing_columns(frame, columns)
    parts = []
    for part in scorer.score(values):
        parts.append(part)
        bar.update(len(part))
    answers = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    # The answers' rows are in the input's order; the output keeps the input's index.
    scored = pd.concat([frame.reset_index(drop=True), answers], axis=1).set_axis(frame.index)
    write_atomically(scored, item, record)
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
    batch: list[BatchFile],
    todo: dict[BatchFile, str],
    cfg: PredictConfig,
    folder: Path,
    record: dict,
) -> BatchTotals:
    """Score every file of `todo` (with why) with every CPU; the others are kept as they are."""
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
                    result = score_file(item, scorer, cfg, record, totals, bar)
                    result.reason = todo[item]
                else:
                    result = FileResult(str(item.input), str(item.output), "kept", reason=KEPT)
                totals.files.append(result)
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


def say_why_scored_again(todo: dict[BatchFile, str]) -> None:
    """A note for each output that exists and is scored again, since it is replaced."""
    for item, reason in todo.items():
        if item.output.exists():
            print(f"note: {item.output} is scored again: {reason}", file=sys.stderr)


def run_predict(cfg: PredictConfig) -> str:
    """Score every input file this model has not scored from the same input and settings;
    log the run to MLflow."""
    raise_on_sigterm()  # a stopped run ends KILLED, its partial output deleted
    check_tracking_server()
    batch = find_inputs(cfg.input, cfg.output)
    with tempfile.TemporaryDirectory(prefix="distrinews-predict-") as work:
        source, folder = open_model(cfg.model, Path(work))
        record = model_record(source)
        todo = plan(batch, record, cfg)
        say_why_scored_again(todo)
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
