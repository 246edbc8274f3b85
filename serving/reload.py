"""Follow a registry alias: a new version is loaded in the background and swapped in at once.

Requests never wait for a load: it runs in its own thread while the current
model keeps answering. The swap is two assignments on the event loop, with no
await between them, so each request is answered wholly by one model; a
request already running finishes on the model it started with. A version that
fails to load, predicts other labels, or that the registry will not hand over
(no such run, access denied) is refused once and logged; the current model
keeps serving. A download that fails for a reason that may pass (the artifact
store unreachable) is retried less and less often, and logged when it starts
failing and when it succeeds.

Only `app.state.model` holds the served model (and requests running on it):
once replaced, a model's ONNX Runtime session is freed and its download deleted.

A challenger (serving.rollout) is followed the same way in a second slot,
`app.state.challenger`, with two differences: it must predict the champion's labels, and
its alias may be missing (none yet, or removed once promoted): the slot is then empty and
every request goes to the champion.
"""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from fastapi import FastAPI

from distrinews.errors import ModelFolderError, RegistryUnreachable
from distrinews.runtime.model_source import ALIAS_URI, alias_version, no_such_alias
from distrinews.runtime.prediction_store import CHALLENGER, CHAMPION
from serving.admission import queue_bound
from serving.inference import (
    LoadedModel,
    load_model,
    retire,
    to_thread_to_the_end,
)
from serving.rollout import challenger_threads
from serving.settings import Settings

log = logging.getLogger("serving")

#: The longest wait between two downloads of a version whose download failed (the
#: wait doubles up to it): an artifact store back from an outage is used within a
#: minute, and one that stays down costs a try a minute, not one a check.
MAX_RETRY_SECONDS = 60.0


@dataclass
class Follow:
    """What the follower remembers between checks: versions, never a model."""

    refused: str | None = None  # cannot be served: skipped until the alias moves
    check_failing: bool = False  # alias checks fail: logged when it starts and ends
    unfetched: str | None = None  # its download failed for a reason that may pass
    tries: int = 0  # failed downloads of `unfetched`
    retry_wait: float = 0.0  # seconds between them, doubling
    retry_at: float = 0.0  # event-loop time of its next download

    def wants(self, version: str, served: str | None, now: float) -> bool:
        """Whether to load `version` now: not served, not refused, not backing off."""
        if version == served:
            self.refused = None  # the alias moved back: a refused version may try again
        if version != self.unfetched:
            self.unfetched = None  # the alias moved on: a later return starts afresh
        if version in (served, self.refused):
            return False
        return version != self.unfetched or now >= self.retry_at

    def download_failed(self, version: str, now: float, reload_seconds: float) -> bool:
        """Set when to try `version` again; True at its first failure (the one to log)."""
        first = version != self.unfetched
        self.tries = 1 if first else self.tries + 1
        wait = reload_seconds if first else self.retry_wait
        self.retry_wait = min(2 * wait, max(MAX_RETRY_SECONDS, reload_seconds))
        self.unfetched, self.retry_at = version, now + self.retry_wait
        return first


@dataclass
class Slot:
    """A model the server follows an alias for: the champion (app.state.model, which always
    holds one) or the challenger (app.state.challenger, empty while its alias is missing)."""

    role: str  # CHAMPION or CHALLENGER
    name: str  # the registered model
    alias: str
    follow: Follow = field(default_factory=Follow)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"


def slots_to_follow(champion: LoadedModel, challenger: str) -> list[Slot]:
    """The slots whose model comes from an alias: the champion's, if served from one, and
    the challenger's, if DISTRINEWS_CHALLENGER names one."""
    slots = []
    if champion.source.alias:
        slots.append(Slot(CHAMPION, *alias_of(champion)))
    if match := ALIAS_URI.match(challenger):
        slots.append(Slot(CHALLENGER, match["name"], match["alias"]))
    return slots


async def follow_aliases(app: FastAPI, settings: Settings, slots: list[Slot]) -> None:
    """Every `reload_seconds`, serve in each slot the version its alias points to, if it
    loads. A failing check (registry down, the champion's alias deleted) is logged when it
    starts failing and when it answers again."""
    while True:
        await asyncio.sleep(settings.reload_seconds)
        for slot in slots:
            # A call per check: its locals, the replaced model among them, end with it.
            await check_alias(app, settings, slot)


def in_slot(app: FastAPI, slot: Slot) -> LoadedModel | None:
    return app.state.model if slot.role == CHAMPION else app.state.challenger


async def check_alias(app: FastAPI, settings: Settings, slot: Slot) -> None:
    """Serve in `slot` the version its alias points to now, if it is new and loads; retire
    the challenger whose alias is gone."""
    current = in_slot(app, slot)
    count = app.state.metrics.count_reload
    version = await read_alias(slot, current, count)
    if version == GONE:
        await withdraw(app, current)
        return
    now = asyncio.get_running_loop().time()
    served = current.source.version if current else None
    if version is None or not slot.follow.wants(version, served, now):
        return
    new = await fetch(app, slot, version, settings, count)
    if new is None:
        return
    put(app, slot, new)
    count("loaded")
    if current is not None:
        await retire(current)
    log.info("%s: now serving version %s of %s", slot.role, version, slot.uri)


#: What read_alias answers for a challenger's alias that no longer exists.
GONE = ""


async def read_alias(
    slot: Slot, current: LoadedModel | None, count: Callable[[str], None]
) -> str | None:
    """The version the alias points to; None while checks fail; GONE if a challenger's
    alias was removed (the champion's missing is a failing check: it keeps serving)."""
    follow = slot.follow
    try:
        version = await asyncio.to_thread(alias_version, slot.name, slot.alias)
        if version is None and slot.role == CHAMPION:
            raise no_such_alias(slot.name, slot.alias)
    except ModelFolderError as err:
        count("check_failed")
        if not follow.check_failing:
            log.error("%s: reload check failed (%s): %s", slot.role, serving(current), err)
        follow.check_failing = True
        return None
    if follow.check_failing:
        log.info("%s: reload check answers again: %s is version %s", slot.role, slot.uri, version)
    follow.check_failing = False
    return GONE if version is None else version


async def withdraw(app: FastAPI, current: LoadedModel | None) -> None:
    """No challenger from now on (its alias was removed): every request to the champion."""
    if current is None:
        return
    app.state.challenger = None
    app.state.rollout.show(None)
    await retire(current)
    log.info("challenger: its alias is gone; version %s retired", current.source.version)


def serving(current: LoadedModel | None) -> str:
    """What keeps serving meanwhile, for a log line."""
    return f"still serving version {current.source.version}" if current else "none served"


async def fetch(
    app: FastAPI,
    slot: Slot,
    version: str,
    settings: Settings,
    count: Callable[[str], None],
) -> LoadedModel | None:
    """`version`, loaded; None if refused or if its download is to be tried again later."""
    current, follow = in_slot(app, slot), slot.follow
    labels = app.state.model.classifier.labels  # a challenger must predict the champion's
    try:
        new = await load_to_the_end(slot, version, labels, settings)
    except RegistryUnreachable as err:
        count("download_failed")
        now = asyncio.get_running_loop().time()
        if follow.download_failed(version, now, settings.reload_seconds):
            log.error(
                "%s: version %s not downloaded (%s), retrying less and less often: %s",
                *(slot.role, version, serving(current), err),
            )
        return None
    except Exception as err:  # anything else: the current model must keep serving
        count("refused")
        follow.refused = version
        log.error("%s: refused version %s (%s): %s", slot.role, version, serving(current), err)
        return None
    if follow.unfetched == version:
        log.info("version %s downloaded after %d failed tries", version, follow.tries)
        follow.unfetched = None
    return new


async def load_to_the_end(
    slot: Slot, version: str, labels: tuple[str, ...], settings: Settings
) -> LoadedModel:
    """`load_version` in a thread; cancelled meanwhile (the server stops), the load still
    ends, and its download is deleted."""
    return await to_thread_to_the_end(
        load_version, slot, version, labels, settings, if_cancelled=LoadedModel.retire
    )


def alias_of(loaded: LoadedModel) -> tuple[str, str]:
    return loaded.source.registered_model, loaded.source.alias


def log_if_stopped(task: asyncio.Task) -> None:
    """The reloader never ends by itself: say so if it did."""
    if not task.cancelled() and task.exception() is not None:
        log.error("alias following stopped: %r", task.exception())


def serve(app: FastAPI, loaded: LoadedModel) -> None:
    """Make `loaded` the model that answers from now on (no await: atomic for requests),
    with the bound on requests in hand sized for it."""
    settings: Settings = app.state.settings
    app.state.batcher.model = loaded
    app.state.batcher.bound = queue_bound(
        settings.max_queue, settings.micro_batch_size, loaded.warm_up
    )
    app.state.model = loaded
    app.state.metrics.describe_model(loaded.source, loaded.classifier)
    app.state.metrics.queue_limit.set(app.state.batcher.bound)


def put(app: FastAPI, slot: Slot, loaded: LoadedModel) -> None:
    """`loaded` in its slot (no await: atomic for requests)."""
    if slot.role == CHAMPION:
        serve(app, loaded)
    else:
        app.state.challenger = loaded
        app.state.rollout.show(loaded)


def load_version(
    slot: Slot, version: str, labels: tuple[str, ...], settings: Settings
) -> LoadedModel:
    """Load `version` of the slot's registered model; refuse other labels than `labels`
    (the champion's)."""
    threads = settings.threads if slot.role == CHAMPION else challenger_threads(settings)
    new = load_model(f"models:/{slot.name}/{version}", threads, settings.spinning)
    check_labels(new, labels)
    return replace(new, source=replace(new.source, alias=slot.alias))


def check_labels(new: LoadedModel, labels: tuple[str, ...]) -> None:
    """ModelFolderError (and its download deleted) if `new` predicts other labels."""
    if new.classifier.labels != labels:
        new.retire()  # downloaded, never to be served
        raise ModelFolderError(
            f"it predicts {', '.join(new.classifier.labels)}, not the served "
            f"{', '.join(labels)}; serve it from a new server"
        )
