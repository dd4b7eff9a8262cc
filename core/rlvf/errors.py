"""Errors that carry a message meant for the user: the CLI prints them without a traceback."""


class RlvfError(Exception):
    """Base class: the message names the thing to fix."""


class PluginError(RlvfError):
    """A plugin failed to load or registered something invalid."""


class RewardError(RlvfError):
    """A reward failed or returned something unusable; `sample` is the index in the batch, if known."""

    def __init__(self, message: str, sample: int | None = None):
        super().__init__(message)
        self.sample = sample


class ConfigError(RlvfError):
    """A config file, override or input file is invalid."""

