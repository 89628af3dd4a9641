"""Which failures are the machine's, not the sample's.

Disk full, an I/O error or out of memory say nothing about a video: code that records bad samples (rejects,
failed rows) re-raises these, so the unit fails, is retried, and a unit that still fails fails the stage with
every finished unit kept for the next run (docs/cache.md).
"""
ENVIRONMENT_ERRORS: tuple[type[BaseException], ...] = (OSError, MemoryError)


class StageError(RuntimeError):
    """A stage cannot run or go on (missing upstream output, nothing usable left, training stopped, ...): never
    retried, since running the unit again would fail the same way."""
