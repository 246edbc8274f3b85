"""What changed in the text: a domain classifier between the version's reference texts and
the window's logged texts (TF-IDF of words and word pairs, logistic regression).

Its ROC AUC, from 5-fold out-of-fold probabilities, is a drift score that needs no
hand-made features: 0.5 when the two sides cannot be told apart, near 1 when every text
says which side it is from. The words and phrases it weighs most on each side say what is
different, and the window's texts it finds least like the reference are examples to read.
Texts are in the log only with the server's DISTRINEWS_LOG_TEXTS; the reference texts
travel with the version (distrinews.runtime.reference_profile.REFERENCE_TEXTS).
"""

from dataclasses import asdict, dataclass

import numpy as np

#: Fewer texts on either side than this, and no classifier is trained: an AUC from a few
#: dozen texts says little.
MIN_TEXTS = 50
#: At most this many texts a side: the same number on both, so that the AUC is not about
#: the sides' sizes.
MAX_TEXTS = 2000
TOP_WORDS = 12
EXAMPLES = 5


@dataclass(frozen=True)
class TextDrift:
    auc: float
    texts: int  # a side
    window_words: list[str]  # most characteristic of the window
    reference_words: list[str]  # most characteristic of the reference
    examples: list[str]  # the window's texts least like the reference

    def as_dict(self) -> dict:
        return asdict(self)


def text_drift(reference: list[str], window: list[str], seed: int = 0) -> TextDrift | None:
    """The domain classifier's verdict; None with fewer than MIN_TEXTS on a side."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    n = min(len(reference), len(window), MAX_TEXTS)
    if n < MIN_TEXTS:
        return None
    rng = np.random.default_rng(seed)
    reference = [reference[i] for i in rng.permutation(len(reference))[:n]]
    window = [window[i] for i in rng.permutation(len(window))[:n]]
    texts, side = reference + window, np.array([0] * n + [1] * n)
    vectorizer = TfidfVectorizer(
        ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=50_000
    )
    features = vectorizer.fit_transform(texts)
    model = LogisticRegression(C=1.0, max_iter=1000)
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    out_of_fold = cross_val_predict(model, features, side, cv=folds, method="predict_proba")[:, 1]
    model.fit(features, side)
    words = np.asarray(vectorizer.get_feature_names_out())
    order = np.argsort(model.coef_[0])
    unlike = np.argsort(-out_of_fold[n:])[:EXAMPLES]
    return TextDrift(
        auc=float(roc_auc_score(side, out_of_fold)),
        texts=n,
        window_words=words[order[::-1][:TOP_WORDS]].tolist(),
        reference_words=words[order[:TOP_WORDS]].tolist(),
        examples=[window[i] for i in unlike.tolist()],
    )
