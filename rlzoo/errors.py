"""The mistakes a user can make, as exceptions whose ``str()`` is one line naming what is wrong.

The CLI prints any :class:`UserError` as ``rlzoo: error: <message>`` and exits with status 2,
without a traceback. Everything else is a bug in rlzoo (or in a plugin) and keeps its traceback.
This module imports nothing, so every other module can raise these without import cycles.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input: config, data, model folder, plugin or run folder."""


class ConfigError(UserError):
    """A config file or override: an unknown key, a wrong type, a value out of range."""


class DataError(UserError):
    """Unusable data: a missing file, a bad row (the message names file and line)."""


class ModelLoadError(UserError):
    """A model folder or file that cannot be loaded."""


class RegistryError(UserError, KeyError):
    """An unknown or duplicate name of an algorithm, reward or data source, or a broken plugin."""

    def __str__(self) -> str:  # KeyError quotes its message; the user gets it plain
        return str(self.args[0])


class RunFolderError(UserError):
    """A run folder that cannot be used: not writable, owned by a live run, or a finished run."""


class TrainingStopped(UserError):
    """A run stopped because training went wrong (non-finite gradients step after step)."""


class Interrupted(Exception):
    """The run stopped on SIGINT or SIGTERM after writing a checkpoint; the CLI exits with 130."""
