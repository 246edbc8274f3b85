"""Micro-batched inference off the event loop."""

import asyncio

from distrinews.runtime.model_source import ModelSource
from serving.inference import LoadedModel, MicroBatcher


def test_a_micro_batch_holds_at_most_its_size_in_texts(local):
    """A request that would overflow the batch waits for the next; one over the size runs alone."""
    batch_sizes: list[int] = []

    async def send() -> None:
        batcher = MicroBatcher(
            LoadedModel(local, ModelSource("tiny"), "now", {}, {}),
            max_texts=4,
            window_ms=200,
            observe=lambda _, classifier, features, rows: batch_sizes.append(len(rows)),
        )
        batcher.start()
        try:
            await asyncio.gather(*(batcher.probabilities([f"news {n}"] * n) for n in (3, 3, 1, 6)))
        finally:
            await batcher.stop()

    asyncio.run(send())
    assert sorted(batch_sizes) == [3, 4, 6]  # 3 | 3 + 1 | 6 alone
