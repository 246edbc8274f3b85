"""What the promotion gate reads from and writes to the Model Registry, and the rule that
keeps the alias and the tags in agreement when a call fails.

Every call may fail without an answer (a 503, a timeout, a full disk while downloading).
Such a failure ends `promote` with one line and moves nothing; only a store's definite
"no" (`model_source.is_answer`) may count as "this champion does not load". The alias
move is the last write: every tag that explains it is written before, and a move that
fails is recorded as such on the version.
"""

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from distrinews.errors import ModelFolderError, RegistryUnreachable, UserError
from distrinews.runtime.cpu import available_cpus
from distrinews.runtime.model_source import (
    ModelSource,
    alias_version,
    first_line,
    is_answer,
    local_model_folder,
)
from distrinews.runtime.onnx_classifier import OnnxClassifier

#: The alias the server follows and `promote` moves.
CHAMPION = "champion"
#: The alias of a version served beside the champion to be judged on live traffic.
CHALLENGER = "challenger"
#: Said of every failure before the alias move: a user may simply run promote again.
NOTHING_MOVED = "nothing was moved; run promote again when the registry answers"

T = TypeVar("T")


class DoesNotLoad(UserError):
    """The store answered: this version's files are not a model that loads (for good)."""


@contextmanager
def registry_call(what: str, after: str = NOTHING_MOVED) -> Iterator[None]:
    """A registry or artifact call: whatever it raises becomes one UserError line saying
    what could not be done and what state that leaves (`after`)."""
    try:
        yield
    except UserError:
        raise
    except Exception as err:  # MLflow, requests and the artifact stores raise many types
        raise UserError(f"cannot {what}: {first_line(err)}; {after}") from err


def read(what: str, call: Callable[[], T]) -> T:
    with registry_call(what):
        return call()


def resolve_version(client: Any, name: str, version: str) -> str:
    """The version asked for, or the newest; UserError if there is none, or if the
    registry could not be asked."""
    from mlflow.exceptions import MlflowException

    try:
        if version:
            # As text: a SQLite registry answers numbers, a tracking server strings.
            return str(client.get_model_version(name, version).version)
        versions = client.search_model_versions(f"name = '{name}'")
    except Exception as err:  # MLflow's "no", or no answer (connection refused, a timeout)
        if not (isinstance(err, MlflowException) and is_answer(err)):
            raise UserError(f"cannot read {name!r}: {first_line(err)}; {NOTHING_MOVED}") from err
        raise UserError(
            f"no version {version or ''} of registered model {name!r}: "
            f"{first_line(err)}; export a model first"
        ) from err
    if not versions:
        raise UserError(f"registered model {name!r} has no versions; export a model first")
    return str(max(int(v.version) for v in versions))


def champion_version(name: str) -> str | None:
    """The version `champion` points to, None if the alias is not set yet; a registry that
    does not answer or refuses must not read as "no champion" (it would skip the gate)."""
    return alias_holder(name, CHAMPION)


def alias_holder(name: str, alias: str) -> str | None:
    """The version `alias` points to, None if it is not set; UserError if the registry does
    not answer or refuses."""
    try:
        return alias_version(name, alias)
    except ModelFolderError as err:
        raise UserError(f"cannot read {name}@{alias}: {err}; {NOTHING_MOVED}") from err


def retire_challenger(client: Any, name: str, version: str) -> str:
    """Remove `challenger` once its version is the champion: the server stops scoring a
    model against itself. What was done, for the run's reason (a failure is said, not
    raised: the promotion itself is done)."""
    try:
        if alias_holder(name, CHALLENGER) != version:
            return f"{name}@{CHALLENGER} points elsewhere: left as it is"
        client.delete_registered_model_alias(name, CHALLENGER)
    except Exception as err:  # the champion moved: say what is left to do
        return f"{name}@{CHALLENGER} not removed ({first_line(err)}): remove it by hand"
    return f"{name}@{CHALLENGER} removed"


def open_version(name: str, version: str, into: Path) -> OnnxClassifier:
    """The version's ONNX model, downloaded into `into`, in the classifier the server runs.
    DoesNotLoad only when the store answered and the files are not a usable model."""
    try:
        folder = local_model_folder(ModelSource(f"models:/{name}/{version}"), into)
        return OnnxClassifier(folder, threads=available_cpus())
    except RegistryUnreachable as err:
        raise UserError(
            f"cannot fetch version {version} of {name!r}: {err}; {NOTHING_MOVED}"
        ) from err
    except ModelFolderError as err:
        raise DoesNotLoad(f"version {version} of {name!r} does not load: {err}") from err


def open_versions(name: str, versions: dict[str, str], work: Path) -> dict[str, OnnxClassifier]:
    """The candidate and the champion, downloaded into `work`. A champion whose files the
    store says are not a usable model is left out (judged as if there were none), so it
    can be replaced; `versions` still names it, as the alias holder `move_alias` expects.
    A champion that could not be fetched stops the gate: it cannot be judged."""
    models = {"candidate": open_version(name, versions["candidate"], work / "candidate")}
    if "champion" in versions:
        try:
            models["champion"] = open_version(name, versions["champion"], work / "champion")
        except DoesNotLoad as err:
            print(f"note: the champion does not load, judged as absent: {err}", file=sys.stderr)
    return models


def write_tags(
    client: Any, name: str, version: str, tags: dict[str, str], after: str = NOTHING_MOVED
) -> None:
    """Tags on a version, in order (the caller puts the one that decides last); a failure
    is one line saying what state it leaves (`after`)."""
    for key, value in tags.items():
        with registry_call(f"tag version {version} of {name!r} with {key}", after):
            client.set_model_version_tag(name, version, key, value)


def move_alias(client: Any, name: str, versions: dict[str, str]) -> str | None:
    """Point `champion` at the candidate, unless another promotion moved it meanwhile.

    Returns None once moved, else why not. MLflow has no compare-and-set for an
    alias: the holder is read again right before and right after the move.
    """
    if (before := champion_version(name)) != versions.get("champion"):
        return f"{name}@{CHAMPION} moved to version {before} during this promotion; run it again"
    try:
        client.set_registered_model_alias(name, CHAMPION, versions["candidate"])
    except Exception as err:  # no answer, or a "no": either way, find out where it points
        return settle_failed_move(client, name, versions, err)
    try:
        after = champion_version(name)
    except UserError:  # the move was acknowledged; only the check after it failed
        return None
    if after != versions["candidate"]:
        return f"{name}@{CHAMPION} was moved to version {after} by a concurrent promotion"
    return None


def settle_failed_move(client: Any, name: str, versions: dict[str, str], err: Exception) -> str:
    """The move raised: it may still have happened (a reply lost after the write). Read the
    alias; if it did move, put it back, so that it only ever points at a version whose
    tags say it was promoted, and say why it was not."""
    why = f"moving {name}@{CHAMPION} failed ({first_line(err)}); run promote again"
    if champion_version(name) == versions["candidate"]:
        restore_alias(client, name, versions.get("champion"))
    return why


def restore_alias(client: Any, name: str, holder: str | None) -> None:
    after = "the alias may point at a version whose tags say it was not promoted: check it"
    with registry_call(f"put {name}@{CHAMPION} back", after):
        if holder is None:
            client.delete_registered_model_alias(name, CHAMPION)
        else:
            client.set_registered_model_alias(name, CHAMPION, holder)
