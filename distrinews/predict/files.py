"""The files of a batch predict run: which inputs there are, how each is read, where its
output goes, and how an output is written so that it is whole or absent.

An output is written to a hidden `.partial` file beside it and renamed when complete
(a rename within a folder is atomic), only after the whole file is scored in memory: a
killed run leaves at most a `.partial` file from the last instant, which the next run
deletes. Each output records the model that scored it and a fingerprint of its input (see
`predict.step.plan`), so a rerun keeps only what the same model scored from the same input.
An output keeps its input's index, which a Parquet round trip gives back.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from distrinews.errors import UserError

#: Input formats by file suffix: pandas' reader for each.
READERS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "json", ".ndjson": "json"}
#: The key of the Parquet metadata that records what scored the file.
SCORED_BY = b"distrinews.scored_by"
PARTIAL = ".partial"
#: Bytes hashed at a time: a file of any size is hashed in constant memory.
HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class BatchFile:
    """One input file and the output it is scored into."""

    input: Path
    output: Path

    @property
    def partial(self) -> Path:
        return self.output.with_name(f".{self.output.name}{PARTIAL}")


def find_inputs(path: str, output: str) -> list[BatchFile]:
    """The input files under `path` (a file, or a folder's files by name) with their outputs
    in the `output` folder; UserError if there are none, or two would share an output."""
    source, target = Path(path).expanduser(), Path(output).expanduser()
    if source.is_dir():
        files = sorted(
            p for p in source.iterdir() if p.suffix in READERS and not p.name.startswith(".")
        )
        if not files:
            suffixes = ", ".join(READERS)
            raise UserError(f"{source} holds no input files ({suffixes}); check -P input=")
    elif source.is_file():
        if source.suffix not in READERS:
            raise UserError(f"{source}: read {', '.join(READERS)} files only")
        files = [source]
    else:
        raise UserError(f"input {source} does not exist")
    if target.resolve() in {source.resolve(), *(f.parent.resolve() for f in files)}:
        raise UserError(f"output {target} is the input's folder; give the output its own folder")
    batch = [BatchFile(f, target / f"{f.stem}.parquet") for f in files]
    seen: dict[Path, Path] = {}
    for item in batch:
        if item.output in seen:
            raise UserError(
                f"{seen[item.output].name} and {item.input.name} would both be scored into "
                f"{item.output}; rename one"
            )
        seen[item.output] = item.input
    return batch


def read_input(path: Path, text_column: str) -> pd.DataFrame:
    """The file as a frame (texts as they are: a CSV's as strings); UserError if it cannot be
    read or has no `text_column`."""
    reader = READERS[path.suffix]
    try:
        if reader == "parquet":
            frame = pd.read_parquet(path)
        elif reader == "csv":
            # Every cell of the text column as written (a headline "1984" stays a string),
            # an empty cell missing.
            frame = pd.read_csv(
                path,
                dtype={text_column: "string"},
                keep_default_na=False,
                na_values={text_column: [""]},
            )
        else:
            frame = pd.read_json(path, lines=True, dtype=False)
    except (OSError, ValueError, pa.ArrowException) as err:
        raise UserError(f"cannot read {path}: {str(err).splitlines()[0]}") from err
    if text_column not in frame.columns:
        columns = ", ".join(map(str, frame.columns)) or "none"
        raise UserError(
            f"{path} has no column {text_column!r} (its columns: {columns}); "
            "pass -P text_column=<the column of texts>"
        )
    return frame


def count_rows(path: Path, text_column: str) -> int:
    """Rows in an input file (Parquet from its footer; others read), for the progress bar."""
    if READERS[path.suffix] == "parquet":
        try:
            return pq.ParquetFile(path).metadata.num_rows
        except (OSError, pa.ArrowException) as err:
            raise UserError(f"cannot read {path}: {str(err).splitlines()[0]}") from err
    return len(read_input(path, text_column))


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read a block at a time; UserError if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as source:
            while block := source.read(HASH_BLOCK):
                digest.update(block)
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from err
    return digest.hexdigest()


def scored_by(path: Path) -> dict | None:
    """What scored an existing output file (None if it holds no such record)."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return None  # not a Parquet file of ours
    record = metadata.get(SCORED_BY)
    return json.loads(record) if record else None


def write_atomically(frame: pd.DataFrame, item: BatchFile, record: dict) -> None:
    """Write `frame` to `item.output` whole: to its `.partial` file, then renamed."""
    item.output.parent.mkdir(parents=True, exist_ok=True)
    table = arrow_table(frame)
    metadata = (table.schema.metadata or {}) | {SCORED_BY: json.dumps(record).encode()}
    try:
        with open(item.partial, "wb") as sink:
            pq.write_table(table.replace_schema_metadata(metadata), sink)
            sink.flush()
            os.fsync(sink.fileno())  # on disk before it is renamed: whole after a crash too
        os.replace(item.partial, item.output)
    finally:
        item.partial.unlink(missing_ok=True)


def arrow_table(frame: pd.DataFrame) -> pa.Table:
    """`frame` as an Arrow table with its index, named or not (pandas' metadata, so that
    `read_parquet` gives it back; a RangeIndex is stored as metadata only). A column of mixed
    types (a JSON Lines text column with a number in it) is kept with its values as strings,
    which Parquet can store."""
    frame = frame.rename(columns=str)  # names as Parquet stores them, without pyarrow's warning
    for name in frame.columns:
        try:
            pa.array(frame[name], from_pandas=True)
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            frame[name] = pd.Series(
                [None if pd.isna(v) else str(v) for v in frame[name]], frame.index, "object"
            )
    return pa.Table.from_pandas(frame, preserve_index=None)


def remove_partials(folder: Path) -> list[Path]:
    """Delete the `.partial` files a killed run left in `folder`; the paths deleted."""
    if not folder.is_dir():
        return []
    left = sorted(folder.glob(f".*{PARTIAL}"))
    for path in left:
        path.unlink(missing_ok=True)
    return left
