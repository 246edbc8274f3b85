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
"""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from fastapi import FastAPI

from distrinews.errors import ModelFolderError, RegistryUnreachable
from distrinews.runtime.model_source import alias_version, no_such_alias
from serving.admission import queue_bound
from serving.inference import (
    LoadedModel,
    load_model,
    retire,
    to_thread_to_the_end,
)
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


async def follow_alias(app: FastAPI, settings: Settings) -> None:
    """Every `reload_seconds`, serve the version the alias points to, if it loads.

    A failing check (registry down, alias deleted) is logged when it starts
    failing and when it answers again.
    """
    follow = Follow()
    while True:
        await asyncio.sleep(settings.reload_seconds)
        # A call per check: its locals, the replaced model among them, end with it.
        await check_alias(app, settings, follow)


async def check_alias(app: FastAPI, settings: Settings, follow: Follow) -> None:
    """Serve the version the alias points to now, if it is new and loads."""
    current: LoadedModel = app.state.model
    count = app.state.metrics.count_reload
    version = await read_alias(current, follow, count)
    now = asyncio.get_running_loop().time()
    if version is None or not follow.wants(version, current.source.version, now):
        return
    new = await fetch(current, version, settings, follow, count)
    if new is None:
        return
    serve(app, new)
    count("loaded")
    await retire(current)
    log.info("now serving version %s of %s", version, alias_uri(current))


async def read_alias(
    current: LoadedModel, follow: Follow, count: Callable[[str], None]
) -> str | None:
    """The version the alias points to; None while checks fail."""
    try:
        version = await asyncio.to_thread(alias_version, *alias_of(current))
        if version is None:
            raise no_such_alias(*alias_of(current))
    except ModelFolderError as err:
        count("check_failed")
        if not follow.check_failing:
            served = current.source.version
            log.error("reload check failed (still serving version %s): %s", served, err)
        follow.check_failing = True
        return None
    if follow.check_failing:
        log.info("reload check answers again: %s is version %s", alias_uri(current), version)
    follow.check_failing = False
    return version


async def fetch(
    current: LoadedModel,
    version: str,
    settings: Settings,
    follow: Follow,
    count: Callable[[str], None],
) -> LoadedModel | None:
    """`version`, loaded; None if refused or if its download is to be tried again later."""
    served = current.source.version
    try:
        new = await load_to_the_end(current, version, settings)
    except RegistryUnreachable as err:
        count("download_failed")
        now = asyncio.get_running_loop().time()
        if follow.download_failed(version, now, settings.reload_seconds):
            log.error(
                "version %s not downloaded (still serving version %s), retrying less and "
                "less often: %s",
                *(version, served, err),
            )
        return None
    except Exception as err:  # anything else: the current model must keep serving
        count("refused")
        follow.refused = version
        log.error("refused version %s (still serving version %s): %s", version, served, err)
        return None
    if follow.unfetched == version:
        log.info("version %s downloaded after %d failed tries", version, follow.tries)
        follow.unfetched = None
    return new


async def load_to_the_end(current: LoadedModel, version: str, settings: Settings) -> LoadedModel:
    """`load_version` in a thread; cancelled meanwhile (the server stops), the load still
    ends, and its download is deleted."""
    return await to_thread_to_the_end(
        load_version, current, version, settings, if_cancelled=LoadedModel.retire
    )


def alias_of(loaded: LoadedModel) -> tuple[str, str]:
    return loaded.source.registered_model, loaded.source.alias


def alias_uri(loaded: LoadedModel) -> str:
    return "models:/{}@{}".format(*alias_of(loaded))


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
    app.state.metrics.describe_model(loaded.source, loaded.classifier.labels)
    app.state.metrics.queue_limit.set(app.state.batcher.bound)


def load_version(current: LoadedModel, version: str, settings: Settings) -> LoadedModel:
    """Load `version` of the current registered model; refuse other labels."""
    name = current.source.registered_model
    new = load_model(f"models:/{name}/{version}", settings.threads, settings.spinning)
    labels, served = new.classifier.labels, current.classifier.labels
    if labels != served:
        new.retire()  # downloaded, never to be served
        raise ModelFolderError(
            f"it predicts {', '.join(labels)}, not the served {', '.join(served)}; "
            "serve it from a new server"
        )
    return replace(new, source=replace(new.source, alias=current.source.alias))
