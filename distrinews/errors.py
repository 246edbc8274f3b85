"""The errors a user can act on: each is reported as one line that says what to do,
never as a traceback. Torch-free: the server raises them too."""

import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input the user can fix (a setting, the data, a run id); the message says how."""


class ModelFolderError(ValueError):
    """The folder or URI is not a usable exported model; the message says why."""


class RegistryUnreachable(ModelFolderError):
    """The registry or artifact store did not answer (no connection, a timeout, a 5xx):
    worth retrying, unlike a bad model or a "no" from the store."""


def run_reporting(work: Callable[[], str]) -> int:
    """A step's entry point: run `work` and print the line it returns (exit status 0), or its
    UserError as one `error:` line on stderr (exit status 2), never a traceback."""
    try:
        message = work()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(message)
    return 0
