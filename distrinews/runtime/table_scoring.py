"""Score a column of texts into columns of answers: a label, its confidence, each class's
probability, and an error for a row that is not a text. The batch predict step and the
registered pyfunc model (so Spark too) both score through here.

Rows are scored in chunks of `CHUNK_ROWS` consecutive rows; within a chunk, texts of similar
token length run together, at most `BATCH_SIZE` per ONNX Runtime call. Dynamic int8
quantization scales activations per call, so a text's probabilities move slightly with its
batch: the same chunking everywhere gives the same rows the same answers.
"""

from collections.abc import Sequence

import numpy as np
import pandas as pd

from distrinews.runtime.text_rules import MAX_TEXT_CHARS, text_problem

#: Consecutive rows scored together (the work unit of the batch step's processes).
CHUNK_ROWS = 1024
#: Most texts in one ONNX Runtime call.
BATCH_SIZE = 64
LABEL, CONFIDENCE, ERROR = "label", "confidence", "error"
#: The column that the registered model reads its texts from.
TEXT = "text"


def probability_column(label: str) -> str:
    return f"prob_{label}"


def answer_columns(labels: Sequence[str]) -> list[str]:
    """The columns a scored table gains, in order."""
    return [LABEL, CONFIDENCE, *map(probability_column, labels), ERROR]


def score_chunk(
    classifier, values: Sequence, max_chars: int = MAX_TEXT_CHARS, batch_size: int = BATCH_SIZE
) -> pd.DataFrame:
    """The answers for one chunk of values (an OnnxClassifier's), one row each, in order.

    A value that is not a text (missing, not a string, blank, too long) gets an empty label,
    empty scores and its `error`; the others are scored."""
    labels = classifier.labels
    errors = [text_problem(value, max_chars) for value in values]
    good = [i for i, error in enumerate(errors) if error is None]
    probabilities = np.full((len(values), len(labels)), np.nan)
    if good:
        encodings = classifier.encode([values[i] for i in good])
        logits = classifier.logits_of(encodings, max_batch=batch_size)
        probabilities[good] = classifier.calibrated(logits)
    # A row of NaN (not scored) has a NaN maximum; its label is blanked below.
    names = np.asarray(labels, dtype=object)[probabilities.argmax(axis=1)]
    names[[error is not None for error in errors]] = ""
    frame = pd.DataFrame(probabilities, columns=[probability_column(x) for x in labels])
    frame.insert(0, CONFIDENCE, probabilities.max(axis=1))
    frame.insert(0, LABEL, names)
    frame[ERROR] = pd.Series(errors, dtype=object)
    return frame


def chunks(count: int, size: int = CHUNK_ROWS) -> list[slice]:
    """The row slices of `count` rows in chunks of `size`."""
    return [slice(start, min(start + size, count)) for start in range(0, count, size)]


def score_values(classifier, values: Sequence, max_chars: int = MAX_TEXT_CHARS) -> pd.DataFrame:
    """The answers for every value, chunk by chunk (as the batch step scores a file)."""
    parts = [score_chunk(classifier, values[part], max_chars) for part in chunks(len(values))]
    if not parts:
        return pd.DataFrame(columns=answer_columns(classifier.labels))
    return pd.concat(parts, ignore_index=True)


def texts_of(model_input: object) -> list:
    """The values to score from what a pyfunc model is given: a list of texts, a Series, or a
    DataFrame (its `text` column, or its only column)."""
    if isinstance(model_input, pd.DataFrame):
        if TEXT in model_input.columns:
            return model_input[TEXT].tolist()
        if len(model_input.columns) == 1:
            return model_input.iloc[:, 0].tolist()
        raise ValueError(
            f"a DataFrame of texts needs a {TEXT!r} column (or one column only); got "
            f"{', '.join(map(str, model_input.columns))}"
        )
    if isinstance(model_input, pd.Series | np.ndarray):
        return list(model_input)
    if isinstance(model_input, str):
        return [model_input]
    return list(model_input)  # type: ignore[call-overload]
