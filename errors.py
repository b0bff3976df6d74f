"""Errors a user can fix. The CLI prints each as one line on stderr and exits with code 2."""


class TlxError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""

    exit_code = 2


class WeightsUnavailableError(TlxError):
    """Pretrained weights are not on disk and could not be downloaded."""


class DatasetError(TlxError):
    """The data folder or manifest is missing, empty or malformed."""


class CacheError(TlxError):
    """A feature cache is missing, foreign or from another feature space."""


class RunError(TlxError):
    """A run folder is missing, incomplete or tampered with."""
