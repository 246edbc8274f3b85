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
from distrinews.runtime.registry import alias_version
from serving.inference import LoadedModel, load_model
from serving.settings import Settings

log = logging.getLogger("serving")


async def follow_alias(app: FastAPI, settings: Settings) -> None:
    """Every `reload_seconds`, serve the version the alias points to, if it loads."""
    refused: str | None = None
    while True:
        await asyncio.sleep(settings.reload_seconds)
        current: LoadedModel = app.state.model
        name, alias = current.source.registered_model, current.source.alias
        try:
            version = await asyncio.to_thread(alias_version, name, alias)
        except ModelFolderError as err:
            log.error(
                "reload check failed (still serving version %s): %s", current.source.version, err
            )
            continue
        if version == current.source.version:
            refused = None
            continue
        if version == refused:
            continue
        try:
            new = await asyncio.to_thread(load_version, current, version, settings)
        except Exception as err:  # anything: the current model must keep serving
            refused = version
            log.error(
                "refused version %s of %s@%s (still serving version %s): %s",
                *(version, name, alias, current.source.version, err),
            )
            continue
        serve(app, new)
        log.info("now serving version %s of %s@%s", version, name, alias)


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
