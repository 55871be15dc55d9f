"""Errors a user can act on. The CLI prints them without a traceback and exits non-zero."""


class ConfigError(ValueError):
    """Bad configuration or input: the message says what, where, and what to do."""


class TrainingDiverged(ConfigError):
    """The training loss stopped being finite; no model was written from the diverged weights."""


class ServiceUnavailable(RuntimeError):
    """A server the command needs (the MLflow tracking server) cannot be reached; the message
    names it and says how long was waited."""


# What the CLI and the KFP components end with one line instead of a traceback.
USER_ERRORS = (ConfigError, ServiceUnavailable)
