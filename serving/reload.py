"""Follow a registry alias: a new version is loaded in the background and swapped in at once.

Requests never wait for a load: it runs in its own thread while the current
model keeps answering. The swap is two assignments on the event loop, with no
await between them, so each request is answered wholly by one model; a
request already running finishes on the model it started with. A version that
fails to load, or predicts other labels, is refused once and logged; the
current model keeps serving.
"""

import asyncio
import logging
from dataclasses import replace

from fastapi import FastAPI

from distrinews.runtime.onnx_classifier import ModelFolderError
from distrinews.runtime.registry import RegistryUnreachable, alias_version
from serving.inference import LoadedModel, load_model
from serving.settings import Settings

log = logging.getLogger("serving")


async def follow_alias(app: FastAPI, settings: Settings) -> None:
    """Every `reload_seconds`, serve the version the alias points to, if it loads.

    A failing check (registry down, alias deleted) is logged when it starts
    failing and when it answers again. A download that fails is retried at the
    next check; a version that does not load for a reason of its own is
    refused until the alias moves again.
    """
    refused: str | None = None
    failing = False
    while True:
        await asyncio.sleep(settings.reload_seconds)
        current: LoadedModel = app.state.model
        served = current.source.version
        try:
            version = await asyncio.to_thread(alias_version, *alias_of(current))
        except ModelFolderError as err:
            if not failing:
                log.error("reload check failed (still serving version %s): %s", served, err)
            failing = True
            continue
        if failing:
            log.info("reload check answers again: %s is version %s", alias_uri(current), version)
        failing = False
        if version in (served, refused):
            refused = None if version == served else refused
            continue
        try:
            new = await asyncio.to_thread(load_version, current, version, settings)
        except RegistryUnreachable as err:
            log.error("version %s not downloaded, retrying at the next check: %s", version, err)
            continue
        except Exception as err:  # anything else: the current model must keep serving
            refused = version
            log.error("refused version %s (still serving version %s): %s", version, served, err)
            continue
        serve(app, new)
        current.retire()
        log.info("now serving version %s of %s", version, alias_uri(current))


def alias_of(loaded: LoadedModel) -> tuple[str, str]:
    return loaded.source.registered_model, loaded.source.alias


def alias_uri(loaded: LoadedModel) -> str:
    return "models:/{}@{}".format(*alias_of(loaded))


def log_if_stopped(task: asyncio.Task) -> None:
    """The reloader never ends by itself: say so if it did."""
    if not task.cancelled() and task.exception() is not None:
        log.error("alias following stopped: %r", task.exception())


def serve(app: FastAPI, loaded: LoadedModel) -> None:
    """Make `loaded` the model that answers from now on (no await: atomic for requests)."""
    app.state.batcher.classifier = loaded.classifier
    app.state.model = loaded
    app.state.metrics.describe_model(loaded.source, loaded.classifier.labels)


def load_version(current: LoadedModel, version: str, settings: Settings) -> LoadedModel:
    """Load `version` of the current registered model; refuse other labels."""
    name = current.source.registered_model
    new = load_model(f"models:/{name}/{version}", settings.threads, settings.spinning)
    labels, served = new.classifier.labels, current.classifier.labels
    if labels != served:
        raise ModelFolderError(
            f"it predicts {', '.join(labels)}, not the served {', '.join(served)}; "
            "serve it from a new server"
        )
    return replace(new, source=replace(new.source, alias=current.source.alias))
