"""Typed exceptions for mistakes a user can make.

The command-line tool turns every ``SeqrlError`` into one line ``error: <message>`` on stderr and exit
code 2, so each message must say what is wrong and where, on its own.
"""


class SeqrlError(Exception):
    """Base class: a problem with the user's input, not a bug in seqrl."""


class DatasetError(SeqrlError, ValueError):
    """A dataset file or array is missing, unreadable, inconsistent or contains bad values."""


class UnknownNameError(SeqrlError, KeyError):
    """A name (dataset, environment, algorithm, ...) that seqrl does not know."""

    def __str__(self) -> str:  # KeyError would quote the message; keep it plain.
        return str(self.args[0]) if self.args else ""


class ConfigError(SeqrlError, ValueError):
    """An option or setting with a bad value."""
