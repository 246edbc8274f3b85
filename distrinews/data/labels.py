"""The label set of a dataset: class names from the data, ids in a fixed order.

A split's `label` column holds class names (strings) or integer ids. The
names of integer ids come from, in this order: a `label_names.txt` in the data
folder (line i names id i), the Hub dataset's ClassLabel names, or, for AG
News (the default dataset, whose local copy has no names file), its four
topics. The ids a model predicts follow the order of the names: the names
file's, else the ids', else (string labels alone) alphabetical.
"""

from pathlib import Path

import pandas as pd

from distrinews.errors import UserError
from distrinews.run_names import data_name
from distrinews.runtime.labels import LABELS

#: One class name per line, line i naming integer label i.
NAMES_FILE = "label_names.txt"


def metric_safe(name: str) -> str:
    """'Sci/Tech' -> 'sci_tech': the class's part of metric keys such as test/f1_sci_tech."""
    return "".join(c if c.isalnum() else "_" for c in name.lower())


def read_names_file(folder: Path) -> tuple[str, ...] | None:
    path = folder / NAMES_FILE
    if not path.is_file():
        return None
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if len(set(names)) != len(names):
        raise UserError(f"{path} names a class twice; give each class one line")
    return names


def default_names(data: str, frames: dict[str, pd.DataFrame]) -> tuple[str, ...] | None:
    """AG News's topics for AG News's integer labels (the Hub id, or a copy in a folder
    named ag_news); string labels name themselves."""
    strings = all(frame["label"].map(_is_string).all() for frame in frames.values())
    return LABELS if data_name(data) == "ag_news" and not strings else None


def _is_string(value: object) -> bool:
    """A class name; not an id, even one a CSV with mixed labels reads as text ("1")."""
    return isinstance(value, str) and not value.strip().isdigit()


def encode_labels(
    frames: dict[str, pd.DataFrame],
    names: tuple[str, ...] | None,
    model_labels: tuple[str, ...] | None = None,
) -> tuple[tuple[str, ...], dict[str, pd.DataFrame]]:
    """(class names in id order, the frames with integer ids in `label`).

    `names` names integer ids (None: the data has no names); `model_labels`,
    when given, is the label set of a trained model the data is scored with.
    """
    named = {split: as_names(frame["label"], split, names) for split, frame in frames.items()}
    labels = model_labels or names or tuple(sorted(set(named["train"])))
    check_label_sets(named, labels, from_model=model_labels is not None)
    keys = [metric_safe(name) for name in labels]
    if len(set(keys)) < len(keys):
        raise UserError(
            f"class names {', '.join(labels)} differ only in case or punctuation, so their "
            "per-class metrics would share a key; rename one of them"
        )
    ids = {name: i for i, name in enumerate(labels)}
    encoded = {
        split: frame.assign(label=named[split].map(ids).astype("int64"))
        for split, frame in frames.items()
    }
    return labels, encoded


def as_names(labels: pd.Series, split: str, names: tuple[str, ...] | None) -> pd.Series:
    """The split's labels as class names: strings as they are, integer ids looked up."""
    is_string = labels.map(_is_string)
    if is_string.all():
        return labels
    if is_string.any():
        raise UserError(
            f"the {split} split mixes string and integer labels (e.g. {labels[is_string].iloc[0]!r}"
            f" and {labels[~is_string].iloc[0]!r}); use class names or integer ids, not both"
        )
    ids = pd.to_numeric(labels, errors="coerce")
    bad = labels[ids.isna() | (ids % 1 != 0) | (ids < 0)]
    if len(bad):
        raise UserError(
            f"the {split} split has {len(bad)} label(s) that are neither class names nor "
            f"integer ids >= 0, e.g. {bad.iloc[0]!r}; fix or drop those rows"
        )
    ids = ids.astype("int64")
    if names is None:
        raise UserError(
            f"the {split} split has integer labels but nothing names them; add {NAMES_FILE} "
            "to the data folder (line i names label i), or put class names in the label column"
        )
    unnamed = sorted(set(ids[ids >= len(names)]))
    if unnamed:
        raise UserError(
            f"the {split} split has integer label(s) {unnamed[:5]} but only {len(names)} names "
            f"({', '.join(names)}); name every id in {NAMES_FILE}"
        )
    return ids.map(dict(enumerate(names)))


def check_label_sets(
    named: dict[str, pd.Series], labels: tuple[str, ...], from_model: bool
) -> None:
    """Every label known, none seen only outside train, and at least two classes."""
    in_train = set(named["train"])
    if len(in_train) < 2 and not from_model:
        raise UserError(
            f"the train split has a single label ({next(iter(in_train))!r}); a classifier "
            "needs at least two classes"
        )
    for split, series in named.items():
        unseen = sorted(set(series) - in_train)
        if unseen and not from_model:
            raise UserError(
                f"the {split} split has label(s) {unseen[:5]} that never occur in train; "
                "a model cannot learn them: add train rows for them or drop those rows"
            )
        unknown = sorted(set(series) - set(labels))
        if unknown:
            whose = "the model's labels" if from_model else "the class names"
            raise UserError(
                f"the {split} split has label(s) {unknown[:5]} that are not among {whose} "
                f"({', '.join(labels)})"
            )
