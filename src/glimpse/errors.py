"""The project's own exception types for mistakes a user can fix.

Every error a person can correct by changing a config value, a command-line argument or a file
derives from :class:`GlimpseError`; ``train.py`` and ``eval.py`` print it as one sentence and
exit with status 1. Anything else is a bug in glimpse or a library and keeps its traceback.

The subclasses also derive from the built-in type that describes them (``ValueError``,
``FileNotFoundError``, ...) so that code catching the built-in type keeps working.
"""

from __future__ import annotations


class GlimpseError(Exception):
    """A mistake in the user's config, command line or files, explained in one sentence."""


class ConfigError(GlimpseError, ValueError):
    """A config value (a model, data or trainer setting) is missing, misspelt or out of range."""


class DataError(GlimpseError, ValueError):
    """A dataset file or folder is missing, malformed or does not fit the config."""


class MissingFileError(GlimpseError, FileNotFoundError):
    """A file the user named (a checkpoint, an image, a corpus) does not exist."""


class CheckpointError(GlimpseError, ValueError):
    """A checkpoint is not a glimpse checkpoint or does not fit what it is loaded into."""


class DownloadError(GlimpseError, RuntimeError):
    """A download (data or weights) failed or produced a file whose checksum is wrong."""


class TrainingDivergedError(GlimpseError, FloatingPointError):
    """The loss became NaN or infinite; the message names the step and what to change."""
