"""Errors a user can act on.

Library code raises these; the CLI prints the message as one line on stderr and exits with 2.
Every message names the file, row or key at fault and says what to do.
"""


class CompError(Exception):
    """Base class: a problem with the user's input, files or settings (exit code 2)."""


class ConfigError(CompError):
    """A config file or a ``--set`` override is invalid."""


class DataError(CompError):
    """The competition folder (CSVs, images) is invalid."""


class FoldsError(CompError):
    """A folds file is missing, invalid or does not match the competition."""


class ModelError(CompError):
    """An unknown architecture, or weights that do not fit it."""


class CheckpointError(CompError):
    """A checkpoint is missing, unreadable or made for other data or settings."""


class TrainError(CompError):
    """Training cannot start or had to stop (e.g. a non-finite loss)."""


class SubmitError(CompError):
    """A submission is invalid or cannot be produced."""


class TuneError(CompError):
    """A study cannot be opened or run (another config's study, a failed worker, a bad storage URL)."""


class ReportError(CompError):
    """An experiment folder is missing, has no finished fold, or holds an unreadable artifact."""


class BundleError(CompError):
    """An exported bundle is incomplete, altered, of another format, or does not fit the test data."""


class LockError(CompError):
    """Another process is writing (or reading) the same experiment."""


class ArtifactError(CompError):
    """A file under ``runs/<exp>/`` cannot be read (torn, hand-edited, or from an unknown layout)."""
