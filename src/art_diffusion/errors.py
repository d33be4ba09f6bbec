"""The one base class of errors a user can act on (a bad config value, data folder, checkpoint or path).

Its message is complete on its own: it names the key or path, what is wrong and the fix. The scripts print it alone
and exit with status 2 (see ``art_diffusion.run.cli.user_errors``); anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error the user can fix; the scripts show its message without a traceback."""


class ConfigError(UserError, ValueError):
    """A config value out of its allowed range: the message names the key, the value, the range and the fix."""


class DataError(UserError, ValueError):
    """A data folder that cannot be trained on as given (wrong path, nothing usable, class sets that disagree)."""


class MissingPathError(UserError, FileNotFoundError):
    """A file or folder the user named (a checkpoint, an input, a data folder) does not exist."""
