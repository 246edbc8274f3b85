"""What the model's inputs and answers looked like on held-out data: the reference that
production traffic is compared with to tell drift.

Export computes it on the validation split (never test) with the int8 model and its
fitted temperature, and writes it into the model folder, so it travels with every
logged and registered version. Each signal is a histogram over fixed bins, stored with
its edges, so the server bins live traffic exactly as the reference was binned.
NumPy and tokenizers only: the server reads it too.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from distrinews.errors import ModelFolderError

PROFILE_FILE = "reference_profile.json"
#: A sample of the held-out texts the profile was made on, for the monitor's domain
#: classifier (distrinews.monitor.text_drift).
REFERENCE_TEXTS_FILE = "reference_texts.json"
#: How many: a domain classifier's ROC AUC on 1000 texts a side has a standard error of
#: about 0.01, TF-IDF and logistic regression fit them in about a second, and the file
#: stays a few hundred KB in every model folder.
REFERENCE_TEXTS = 1000

#: Confidence bins: 20 of equal width (a 4-class confidence is at least 0.25).
CONFIDENCE_EDGES = tuple(round(i / 20, 2) for i in range(21))
#: Per-text share of unknown tokens: most texts have none, so the first bin is exactly 0.
UNKNOWN_SHARE_EDGES = (0.0, 1e-9, 0.02, 0.05, 0.1, 0.2, 1.0)


def token_length_edges(max_length: int) -> tuple[int, ...]:
    """Token-count bins of width max_length/8, the last closed at max_length (truncated
    texts land there)."""
    step = max(1, max_length // 8)
    return (*range(0, max_length, step), max_length + 1)


@dataclass(frozen=True)
class TextFeatures:
    """What the server can see of one text once tokenized, without keeping the text."""

    tokens: int  # after truncation, special tokens included
    truncated: bool
    unknown_share: float  # of its tokens, [UNK]


def text_features(encoding, unknown_id: int | None) -> TextFeatures:
    """Features of one tokenizers Encoding (truncation enabled, no padding)."""
    ids = encoding.ids
    unknown = ids.count(unknown_id) if unknown_id is not None else 0
    return TextFeatures(len(ids), bool(encoding.overflowing), unknown / max(1, len(ids)))


def unknown_token_id(tokenizer) -> int | None:
    """The id of the tokenizer's unknown token ([UNK] for WordPiece), None if it has none."""
    token = getattr(tokenizer.model, "unk_token", None)
    return tokenizer.token_to_id(token) if token else None


def shares(values: np.ndarray, edges: tuple[float, ...]) -> list[float]:
    """The share of `values` in each bin [edges[i], edges[i+1]); the last bin is closed."""
    counts, _ = np.histogram(np.asarray(values, dtype=np.float64), bins=np.asarray(edges))
    return (counts / max(1, counts.sum())).tolist()


@dataclass(frozen=True)
class ReferenceProfile:
    rows: int
    split: str
    temperature: float
    class_prior: dict[str, float]  # the training labels' shares
    predicted_labels: dict[str, float]  # the int8 model's, on `split`
    confidence_edges: tuple[float, ...]
    confidence: list[float]
    confidence_mean: float
    token_length_edges: tuple[int, ...]
    token_length: list[float]
    unknown_share_edges: tuple[float, ...]
    unknown_share: list[float]
    truncated_share: float
    unknown_token_share: float  # of all tokens
    # Confidence (in bands of token counts) to share right on `split` and its shortened
    # copies (distrinews.export.accuracy_map): what the server's estimated accuracy maps
    # its confidences through. None: a profile made without labels.
    accuracy_map: dict | None = None

    def write(self, folder: Path) -> None:
        (folder / PROFILE_FILE).write_text(json.dumps(asdict(self), indent=2))


def label_shares(indices: np.ndarray, labels: tuple[str, ...]) -> dict[str, float]:
    counts = np.bincount(np.asarray(indices, dtype=np.int64), minlength=len(labels))
    return dict(zip(labels, (counts / max(1, counts.sum())).tolist(), strict=True))


def build_profile(
    classifier,
    texts: list[str],
    train_labels: np.ndarray,
    split: str = "validation",
    logits: np.ndarray | None = None,
    accuracy_map: dict | None = None,
) -> ReferenceProfile:
    """The profile of `classifier` (an OnnxClassifier, temperature applied) on `texts`;
    `logits`: its logits of `texts` if computed already (not computed again);
    `accuracy_map`: fitted on labelled rows (distrinews.export.accuracy_map), kept as is."""
    encodings = classifier.encode(texts)
    if logits is None:
        logits = classifier.logits_of(encodings)
    probabilities = classifier.calibrated(logits)
    features = [text_features(e, classifier.unknown_id) for e in encodings]
    tokens = np.array([f.tokens for f in features])
    unknown = np.array([f.unknown_share for f in features])
    edges = token_length_edges(classifier.max_length)
    return ReferenceProfile(
        rows=len(texts),
        split=split,
        temperature=classifier.temperature,
        class_prior=label_shares(train_labels, classifier.labels),
        predicted_labels=label_shares(probabilities.argmax(axis=1), classifier.labels),
        confidence_edges=CONFIDENCE_EDGES,
        confidence=shares(probabilities.max(axis=1), CONFIDENCE_EDGES),
        confidence_mean=float(probabilities.max(axis=1).mean()),
        token_length_edges=edges,
        token_length=shares(tokens, edges),
        unknown_share_edges=UNKNOWN_SHARE_EDGES,
        unknown_share=shares(unknown, UNKNOWN_SHARE_EDGES),
        truncated_share=float(np.mean([f.truncated for f in features])),
        unknown_token_share=float((unknown * tokens).sum() / max(1, tokens.sum())),
        accuracy_map=accuracy_map,
    )


def read_profile(folder: Path) -> dict | None:
    """The folder's reference profile as written; None for a model exported without one."""
    path = folder / PROFILE_FILE
    if not path.is_file():
        return None
    try:
        profile = json.loads(path.read_text())
    except ValueError as err:
        raise ModelFolderError(f"{path} is not valid JSON ({err}); re-export the model") from err
    if not isinstance(profile, dict) or "predicted_labels" not in profile:
        raise ModelFolderError(f"{path} is not a reference profile; re-export the model")
    return profile


def js_distance(p: list[float] | np.ndarray, q: list[float] | np.ndarray) -> float:
    """Jensen-Shannon distance (base 2) between two histograms of the same bins: 0 for the
    same shares, 1 for shares on disjoint bins. Symmetric, bounded, and defined when a bin
    is empty on one side (unlike the population stability index)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p, q = p / max(p.sum(), 1e-12), q / max(q.sum(), 1e-12)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        used = a > 0
        return float((a[used] * np.log2(a[used] / m[used])).sum())

    return float(np.sqrt(max(0.0, (kl(p) + kl(q)) / 2)))


#: The numeric drift signals: the profile's keys of their bin edges and reference shares.
NUMERIC_SIGNALS = {
    "confidence": ("confidence_edges", "confidence"),
    "token_length": ("token_length_edges", "token_length"),
    "unknown_share": ("unknown_share_edges", "unknown_share"),
}


def compared_histograms(
    profile: dict,
    labels: list[str] | tuple[str, ...],
    label_counts: np.ndarray,
    values: dict[str, np.ndarray],
) -> dict[str, tuple[list, list[float], list[float]]]:
    """Per drift signal, a window against the reference over the same bins: (bins, window
    shares, reference shares). The bins are the labels, or a numeric signal's edges;
    `values` holds each numeric signal's values, one per prediction of the window."""
    counts = np.asarray(label_counts, dtype=np.float64)
    reference = [profile["predicted_labels"].get(label, 0.0) for label in labels]
    histograms = {
        "predicted_label": (list(labels), (counts / max(1.0, counts.sum())).tolist(), reference)
    }
    for signal, (edges, shares_key) in NUMERIC_SIGNALS.items():
        window = shares(values[signal], profile[edges])
        histograms[signal] = (list(profile[edges]), window, profile[shares_key])
    return histograms


def write_reference_texts(folder: Path, texts: list[str], seed: int = 0) -> None:
    """At most REFERENCE_TEXTS of `texts`, drawn with `seed`, into the model folder."""
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(texts))[:REFERENCE_TEXTS]
    sample = [texts[i] for i in sorted(chosen.tolist())]
    (folder / REFERENCE_TEXTS_FILE).write_text(json.dumps(sample, ensure_ascii=False))


def read_reference_texts(folder: Path) -> list[str] | None:
    """The folder's reference texts; None for a model exported without them."""
    path = folder / REFERENCE_TEXTS_FILE
    if not path.is_file():
        return None
    try:
        texts = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ModelFolderError(f"{path} is not valid JSON ({err}); re-export the model") from err
    return [text for text in texts if isinstance(text, str)] if isinstance(texts, list) else None
