"""Errors a user can fix. The CLI prints each as one line on stderr and exits with code 2
(1 for :class:`StorageError`: the disk failed a well-formed request)."""

import errno


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


class StorageError(TlxError):
    """A file could not be written: the disk is full, read-only, denies access or failed."""

    exit_code = 1

    def __init__(self, path, exc: OSError, action: str = "write"):
        self.path, self.errno, self.cause = path, exc.errno, exc
        super().__init__(f"cannot {action} {path}: {exc.strerror or exc}; {storage_advice(exc.errno)}")


# The errors of a write that the disk, not tlx, causes: reported as one line, never a traceback.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG})


def storage_advice(code: int | None) -> str:
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "free some space there (or choose a folder on another disk) and re-run; what was committed is kept"
    if code == errno.EROFS:
        return "the file system is mounted read-only: remount it writable or choose a writable folder"
    if code in (errno.EACCES, errno.EPERM):
        return "give yourself write permission there or choose a folder you can write"
    return "the disk reported an error: check it, then re-run; what was committed is kept"
