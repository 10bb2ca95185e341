"""Errors that mean "the user gave us something bad". The CLI prints their message as one line and exits 2."""


class TRMError(ValueError):
    """Base class for user-facing errors."""


class ConfigError(TRMError):
    """A bad preset, override or config value."""


class CheckpointError(TRMError):
    """A missing, corrupt or mismatched checkpoint."""


class DataError(TRMError):
    """A missing, corrupt or inconsistent data set."""
