"""The two ways an evaluation refuses to start, each with a message that names the bad value.

The command line prints these without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EvalInputError(ValueError):
    """A data file, argument or model path that cannot be evaluated."""


class RunFolderError(RuntimeError):
    """The output folder cannot be resumed safely (other settings, a corrupt line, another live run)."""
