"""Errors the command line turns into one clear line and an exit code."""


class SiqkitError(Exception):
    """An error meant for the user: printed as one line, exit code ``exit_code``."""

    exit_code = 1


class RecipeError(SiqkitError):
    """The recipe is invalid; nothing was written. Exit code 2."""

    exit_code = 2


class StoreError(SiqkitError):
    """The run store cannot be used as asked (schema mismatch, in use by another run)."""

    exit_code = 1


class QuarantineError(SiqkitError):
    """A malformed input row under ``--strict``."""

    exit_code = 1


class SourceError(SiqkitError):
    """A whole seed source cannot be used (file missing, not Parquet, no question column...)."""
