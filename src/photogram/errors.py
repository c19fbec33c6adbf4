"""Errors a user or operator can cause. Each carries a message fit to print as it is."""


class PhotogramError(Exception):
    """Base of the errors the CLI prints as one line and the API maps to a status."""


class ConfigError(PhotogramError):
    pass


class DatabaseUnavailableError(PhotogramError):
    pass


class NotInitialisedError(PhotogramError):
    pass


class ClusterMismatchError(PhotogramError):
    """Settings and the initialised cluster disagree (shard count, database names)."""
