"""The domain classifier on real AG News texts: the same kind of text is not told apart
from the reference; headlines, or texts about a new subject, are, and it names why."""

import pandas as pd

from devkit.processes import SHARED_DATA
from distrinews.monitor.text_drift import text_drift


def test_like_texts_score_near_half_and_shifted_ones_high_with_the_words_that_say_why():
    train = pd.read_parquet(SHARED_DATA / "train.parquet")["text"].tolist()
    reference, same = train[:600], train[600:1200]
    assert text_drift(reference, same).auc < 0.6
    headlines = [" ".join(text.split()[:8]) for text in train[1200:1800]]
    cut = text_drift(reference, headlines)
    assert cut.auc > 0.7
    # What a full article has and a headline lacks: its agency byline and its punctuation.
    assert {"reuters", "ap", "afp", "the"} & set(cut.reference_words), cut.reference_words
    crypto = [f"{text} bitcoin exchange tokens" for text in train[1800:2400]]
    new_subject = text_drift(reference, crypto)
    assert new_subject.auc > 0.95 and "bitcoin" in new_subject.window_words[:5]
    assert all("bitcoin" in example for example in new_subject.examples)
    assert text_drift(reference, same[:20]) is None  # too few to say anything
