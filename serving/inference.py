"""Model loading and micro-batched inference off the event loop."""

import asyncio
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnxruntime as ort

from distrinews.errors import ModelFolderError
from distrinews.runtime.model_source import (
    ModelSource,
    is_remote,
    local_model_folder,
    resolve_source,
)
from distrinews.runtime.onnx_classifier import OnnxClassifier
from distrinews.runtime.reference_profile import TextFeatures, text_features
from serving.stages import INFERENCE_MARKS

log = logging.getLogger("serving")

T = TypeVar("T")


@dataclass(frozen=True)
class LoadedModel:
    """A classifier ready to serve, with where it came from and when it was loaded."""

    classifier: OnnxClassifier
    source: ModelSource
    loaded_at: str
    report: dict  # the export's export_report.json, read at load
    warm_up: dict  # what ran before it served (serving.inference.warm_up)
    download: Path | None = None  # the folder it was downloaded into (ours to delete)

    def retire(self) -> None:
        """Delete its download once another model serves, or the server stops. Requests
        still running on it are unaffected: ONNX Runtime and the tokenizer hold what they
        read in memory. Blocks while it deletes: on the event loop, use `retire`."""
        if self.download is not None:
            shutil.rmtree(self.download, ignore_errors=True)


async def to_thread_to_the_end(
    func: Callable[..., T],
    *args: object,
    if_cancelled: Callable[[T], object] | None = None,
    executor: Executor | None = None,
) -> T:
    """`func(*args)` in a thread (of `executor` if given). If the caller is cancelled
    meanwhile, it still waits for the thread to end (a thread cannot be stopped), hands the
    result to `if_cancelled`, then lets the cancellation go on: a stopping server leaves
    nothing half done."""
    work = asyncio.get_running_loop().run_in_executor(executor, func, *args)
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait([work])
        if if_cancelled is not None and not work.cancelled() and work.exception() is None:
            await asyncio.to_thread(if_cancelled, work.result())
        raise


async def retire(model: LoadedModel) -> None:
    """Delete `model`'s download in a thread (a large folder takes a while), to the end."""
    await to_thread_to_the_end(model.retire)


#: Words of one WordPiece token each, for texts of a chosen token count.
WORDS = (
    *("the", "market", "said", "on", "tuesday", "that", "its", "shares", "rose", "after"),
    *("the", "company", "reported", "higher", "profit", "in", "the", "third", "quarter"),
    *("as", "oil", "prices", "fell", "and", "the", "team", "won"),
)


def texts_like(profile: dict | None, count: int, seed: int = 0) -> list[str]:
    """`count` texts whose token counts follow the profile's histogram (48 tokens each
    without one), each count drawn uniformly within its bin."""
    rng = np.random.default_rng(seed)
    if profile is None:
        lengths = np.full(count, 48)
    else:
        edges, shares = profile["token_length_edges"], np.asarray(profile["token_length"])
        bins = rng.choice(len(shares), size=count, p=shares / shares.sum())
        lengths = [rng.integers(max(3, edges[b]), max(4, edges[b + 1])) for b in bins]
    # Two of the tokens are [CLS] and [SEP].
    return [
        " ".join(WORDS[(i + j) % len(WORDS)] for j in range(n - 2)) for i, n in enumerate(lengths)
    ]


#: Warm-up texts: this many at lengths drawn from the model's reference profile (its
#: validation split), plus one at the model's longest, each run twice before the model
#: serves: the first real requests then find ONNX Runtime's buffers and kernels ready
#: for the lengths they bring.
WARM_UP_TEXTS = 8


def load_model(model: str, threads: int, spinning: str) -> LoadedModel:
    """Resolve (an alias to its current version), download, open and warm a model.

    The model's own labels are served (they travel in its config.json).
    """
    source = resolve_source(model)
    download = Path(tempfile.mkdtemp(prefix="distrinews-model-")) if is_remote(source.uri) else None
    try:
        folder = local_model_folder(source, into=download)
        classifier = OnnxClassifier(folder, threads=threads, spinning=spinning)
        report = export_report(folder)
        warmed = warm_up(classifier)
    except BaseException:
        if download is not None:
            shutil.rmtree(download, ignore_errors=True)
        raise
    loaded_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return LoadedModel(classifier, source, loaded_at, report, warmed, download)


def warm_up(classifier: OnnxClassifier) -> dict:
    """Run texts of the model's typical lengths, and its longest, twice: the second pass
    finds every buffer ready, so the server reports ready (and a reload swaps the model in)
    only once the model is warm. What ran, for /model."""
    texts = [*texts_like(classifier.profile, WARM_UP_TEXTS), " ".join(WORDS * 20)]
    encodings = classifier.encode(texts)
    start = time.perf_counter()
    for _ in range(2):
        for encoding in encodings:
            try:
                classifier.calibrated(classifier.logits_of([encoding]))
            except Exception as err:  # onnxruntime raises its own types
                # Say it now, in one line, rather than answer 500 to such requests later.
                first_line = str(err).strip().splitlines()[0][:300]
                raise ModelFolderError(
                    f"{classifier.folder} fails on a warm-up text of {len(encoding.ids)} "
                    f"tokens ({first_line}); re-export the model"
                ) from err
    seconds = round(time.perf_counter() - start, 3)
    lengths = sorted({len(e.ids) for e in encodings})
    return {"inferences": 2 * len(texts), "token_lengths": lengths, "seconds": seconds}


def export_report(folder: Path) -> dict:
    """The export's report ({} if the folder has none); ModelFolderError if it is unreadable,
    rather than a traceback at load or a 500 from /model later."""
    path = folder / "export_report.json"
    if not path.is_file():
        return {}
    try:
        report = json.loads(path.read_text())
    except ValueError as err:  # not UTF-8, not JSON
        raise ModelFolderError(f"{path} is not valid JSON ({err}); re-export the model") from err
    if not isinstance(report, dict):
        raise ModelFolderError(f"{path} holds no JSON object; re-export the model")
    return report


@dataclass(frozen=True)
class Scores:
    """Rows of class probabilities, the labels of their columns, what each text looked
    like to the model (its token count and unknown-token share), and the model that
    computed them: its version is the one answered, logged and counted, even if another
    was swapped in while the request waited (serving.reload)."""

    rows: np.ndarray
    labels: tuple[str, ...]
    features: list[TextFeatures]
    model: LoadedModel
    marks: dict[str, float]  # when the inference reached each of serving.stages' marks

    @property
    def inference_seconds(self) -> float:
        """How long its inference took, tokenization included."""
        return self.marks["scored"] - self.marks["inference"]

    def part(self, start: int, end: int) -> "Scores":
        """The scores of texts [start, end): one request's share of a micro-batch."""
        rows, features = self.rows[start:end], self.features[start:end]
        return Scores(rows, self.labels, features, self.model, self.marks)


class Overloaded(Exception):
    """The model has as many requests in hand as its bound: this one is answered 429."""


#: A request's texts, and the future its scores are set on.
Waiting = tuple[list[str], asyncio.Future]
#: (seconds of one inference, its classifier, its texts' features, their probabilities).
Observer = Callable[[float, OnnxClassifier, list[TextFeatures], np.ndarray], None]
#: How long a shadow scoring waits, after the answer it follows, before it starts: a client
#: sending back to back often has its next request in by then, and the scoring is not
#: started at all, rather than started and stopped, which costs that request the CPU the
#: stopped scoring held (benchmarks/shadow.md; 5 ms measured no better).
SHADOW_GRACE_SECONDS = 0.002
#: Told how a shadow scoring ended ("scored", "dropped", "preempted", "failed"), with its
#: scores if any.
ShadowDone = Callable[[str, "Scores | None"], None]


class MicroBatcher:
    """Combine texts from concurrent requests into one ONNX Runtime call.

    One worker takes every request queued so far (and, if `window_ms` > 0,
    those arriving within that window) up to `max_texts` texts, runs one
    inference in a thread, and answers each request with its rows. A request
    that would take a batch over `max_texts` starts the next one; one holding
    `max_texts` or more runs alone. A lone request waits at most the window;
    under load, batches grow and requests/s with them.
    """

    def __init__(
        self,
        model: LoadedModel,
        max_texts: int,
        window_ms: float,
        observe: Observer = lambda seconds, classifier, features, rows: None,
    ):
        self.model = model  # replaced by serving.reload.serve
        # Called on the event loop with what one inference saw and answered.
        self.observe = observe
        self.max_texts = max_texts
        self.window = window_ms / 1000
        self.queue: asyncio.Queue[Waiting] = asyncio.Queue()
        self.held: Waiting | None = None  # taken from the queue, too large for the last batch
        # One inference at a time: ONNX Runtime already uses every core it was given.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx")
        self.worker: asyncio.Task | None = None
        self.bound = 0  # most requests in hand at once (0: no bound): DISTRINEWS_MAX_QUEUE
        self.in_hand = 0  # requests admitted and not yet answered
        # The shadow scoring running on the model's thread, if any: its run's stop switch.
        self.shadow_run: ort.RunOptions | None = None
        self.arrivals = 0  # prediction requests that reached the server so far

    def start(self) -> None:
        self.worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.worker:
            self.worker.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def probabilities(self, texts: list[str], model: LoadedModel | None = None) -> Scores:
        """The texts' scores from the served model (or `model`, a canary's challenger,
        which runs alone); Overloaded at once if the model already has `bound` requests in
        hand (one event loop: the count needs no lock). A shadow scoring under way is
        stopped: a client's request never waits for one."""
        if self.full():
            raise Overloaded
        self.in_hand += 1
        self.preempt_shadow()
        try:
            return await self._probabilities(texts, model)
        finally:
            self.in_hand -= 1

    def arrived(self) -> None:
        """A prediction request arrived (serving.admission, before its body is read): it
        stops the shadow scoring under way, and one about to start does not."""
        self.arrivals += 1
        self.preempt_shadow()

    def shadow(self, model: LoadedModel, texts: list[str], done: ShadowDone) -> None:
        """Score `texts` with `model` on the model's thread, for comparison only; `done` is
        told how it ended ("dropped" if it never started), on the event loop.

        It starts SHADOW_GRACE_SECONDS later, and only if no request arrived meanwhile,
        none is in hand and no other shadow scoring runs; the next request to arrive stops
        it. Shadow work is the first to go when the server is busy: a client that sends
        its next request as soon as it has the answer never waits for it."""
        loop = asyncio.get_running_loop()
        loop.call_later(SHADOW_GRACE_SECONDS, self._start_shadow, model, texts, done, self.arrivals)

    def _start_shadow(
        self, model: LoadedModel, texts: list[str], done: ShadowDone, arrivals: int
    ) -> None:
        if self.arrivals != arrivals or self.in_hand or self.shadow_run is not None:
            done("dropped", None)
            return
        run = ort.RunOptions()
        try:
            work = asyncio.get_running_loop().run_in_executor(
                self.executor, self.infer, model, texts, run
            )
        except RuntimeError:  # the server stopped within the grace: its executor is shut
            done("dropped", None)
            return
        self.shadow_run = run

        def ended(work: asyncio.Future) -> None:
            self.shadow_run = None
            if work.cancelled() or work.exception() is not None:
                done("preempted" if run.terminate or work.cancelled() else "failed", None)
            else:
                done("scored", work.result())

        work.add_done_callback(ended)

    def preempt_shadow(self) -> None:
        """Stop the shadow scoring under way, if any: ONNX Runtime ends the run between two
        of its nodes, and it raises (counted as preempted)."""
        if self.shadow_run is not None:
            self.shadow_run.terminate = True

    def full(self) -> bool:
        """Whether the model holds as many requests as its bound (never, without one)."""
        return bool(self.bound) and self.in_hand >= self.bound

    async def _probabilities(self, texts: list[str], model: LoadedModel | None) -> Scores:
        loop = asyncio.get_running_loop()
        if len(texts) >= self.max_texts or model is not None:
            # Nothing could join this request (always so with batching off, and for a
            # canary, which another model answers): skip the queue.
            canary, model = model is not None, model or self.model
            if self.in_hand == 1:
                # Requests that arrived while the loop was busy start first, and are counted
                # (or refused past the bound): an inference on the loop would hide them.
                await asyncio.sleep(0)
            if self.in_hand == 1:
                # Nothing else in hand, so nothing else runs: inferring right here saves two
                # hops between threads (a wake-up each, about 0.1 ms) and blocks nobody
                # who would not wait for the model anyway.
                scores = self.infer(model, texts)
            else:
                # Others are in hand: infer in the model's thread while the loop takes
                # their requests. Shielded, so a cancelled request still counts as in hand
                # until its inference ends (an inference cannot be stopped), and none runs
                # beside it.
                scores = await to_thread_to_the_end(
                    self.infer, model, texts, executor=self.executor
                )
            if not canary:  # the champion's metrics and drift window only
                self.observe_later(scores)
            return scores
        future = loop.create_future()
        await self.queue.put((texts, future))
        return await future

    def infer(
        self, model: LoadedModel, texts: list[str], run: ort.RunOptions | None = None
    ) -> Scores:
        """Class probabilities from `model`, with its labels: one model answers a request
        whole, even if another is swapped in meanwhile (serving.reload)."""
        classifier = model.classifier
        clock = [time.perf_counter()]  # serving.stages.INFERENCE_MARKS, in order
        encodings = classifier.encode(texts)
        clock.append(time.perf_counter())
        logits = classifier.logits_of(encodings, run_options=run)
        clock.append(time.perf_counter())
        rows = classifier.calibrated(logits)
        features = [text_features(e, classifier.unknown_id) for e in encodings]
        clock.append(time.perf_counter())
        marks = dict(zip(INFERENCE_MARKS, clock, strict=True))
        return Scores(rows, classifier.labels, features, model, marks)

    def observe_later(self, scores: Scores) -> None:
        """Hand one inference to `observe` (metrics, the drift window) on the event loop
        once the current request has sent its answer: it is off the answer's path, and
        only the loop's thread ever touches the drift window."""
        classifier = scores.model.classifier
        asyncio.get_running_loop().call_soon(
            self.observe, scores.inference_seconds, classifier, scores.features, scores.rows
        )

    async def _collect(self) -> list[Waiting]:
        """The next batch: at most `max_texts` texts, unless its one request holds more."""
        first = self.held or await self.queue.get()  # the request held back goes first
        self.held = None
        batch, count = [first], len(first[0])
        deadline = asyncio.get_running_loop().time() + self.window
        while count < self.max_texts:
            item = await self._next(deadline)
            if item is None:
                break
            if count + len(item[0]) > self.max_texts:
                self.held = item  # it would overflow this batch: it starts the next one
                break
            batch.append(item)
            count += len(item[0])
        return batch

    async def _next(self, deadline: float) -> Waiting | None:
        """The next queued request, waiting for one until `deadline`; None after it."""
        if not self.queue.empty():
            return self.queue.get_nowait()
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return None
        try:
            return await asyncio.wait_for(self.queue.get(), remaining)
        except asyncio.TimeoutError:  # not TimeoutError before Python 3.11
            return None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            texts = [text for request_texts, _ in batch for text in request_texts]
            try:
                scores = await loop.run_in_executor(self.executor, self.infer, self.model, texts)
            except Exception as err:  # answer every waiting request, keep serving
                log.exception("inference failed")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            self.observe_later(scores)
            start = 0
            for request_texts, future in batch:
                if not future.done():  # the client may have gone away
                    future.set_result(scores.part(start, start + len(request_texts)))
                start += len(request_texts)
