"""The rows the accuracy map is fitted on: the validation texts, and shortened copies of
them that keep their labels.

A validation split of whole articles says how often the model is right at each confidence
on whole articles only, and the model is surer of a short text than it is right. Copies
cut to a prefix (a headline, a teaser) or to a span from anywhere in the text (a feed that
drops the headline) give the map's bands of short token counts rows whose labels are
known (distrinews.runtime.accuracy_estimate).
"""

import numpy as np

from distrinews.runtime.accuracy_estimate import fit_accuracy_map

#: Prefixes and spans made of each text: with three of each, every band of short texts
#: gets several hundred rows from a validation split of about 900.
COPIES = 3
#: The texts that copies are made of, at most (a random sample beyond): the export predicts
#: 2 * COPIES of each, about a minute for MiniLM int8 on 2 vCPUs at this cap.
MAX_TEXTS = 2000
#: The fewest words a copy keeps.
MIN_WORDS = 3


def shortened_copies(texts: list[str], seed: int = 0) -> tuple[list[str], np.ndarray]:
    """COPIES prefixes and COPIES spans of each text (of up to MAX_TEXTS of them), each
    MIN_WORDS to one word fewer than the text, and the index of the text each was cut
    from. Texts too short to cut give none."""
    rng = np.random.default_rng(seed)
    chosen = np.arange(len(texts))
    if len(texts) > MAX_TEXTS:
        chosen = np.sort(rng.choice(len(texts), MAX_TEXTS, replace=False))
    copies, sources = [], []
    for index in chosen:
        words = texts[index].split()
        if len(words) <= MIN_WORDS:
            continue
        for anywhere in [False] * COPIES + [True] * COPIES:
            keep = int(rng.integers(MIN_WORDS, len(words)))
            start = int(rng.integers(0, len(words) - keep + 1)) if anywhere else 0
            copies.append(" ".join(words[start : start + keep]))
            sources.append(index)
    return copies, np.asarray(sources, dtype=np.int64)


def fit_on_validation(classifier, texts: list[str], labels: np.ndarray, logits: np.ndarray) -> dict:
    """The accuracy map of `classifier` (an OnnxClassifier, temperature applied) fitted on
    the validation `texts` (whose `logits` are given) and their shortened copies, with each
    band's error (resampling texts with their copies)."""
    copies, sources = shortened_copies(texts)
    encodings = classifier.encode(texts) + classifier.encode(copies)
    all_logits = np.concatenate([logits, classifier.logits_of(encodings[len(texts) :])])
    probabilities = classifier.calibrated(all_logits)
    groups = np.concatenate([np.arange(len(texts)), sources])
    right = probabilities.argmax(axis=1) == np.asarray(labels)[groups]
    tokens = np.array([len(e.ids) for e in encodings])
    return fit_accuracy_map(probabilities.max(axis=1), right, tokens, groups)
