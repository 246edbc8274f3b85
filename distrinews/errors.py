"""The errors a user can act on: each is reported as one line that says what to do,
never as a traceback. Torch-free: the server raises them too."""


class UserError(Exception):
    """Bad input the user can fix (a setting, the data, a run id); the message says how."""


class ModelFolderError(ValueError):
    """The folder or URI is not a usable exported model; the message says why."""


class RegistryUnreachable(ModelFolderError):
    """The registry or artifact store did not answer (no connection, a timeout, a 5xx):
    worth retrying, unlike a bad model or a "no" from the store."""
