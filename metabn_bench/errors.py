"""The one exception type that the command line turns into a one-line error and exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: an unknown name, missing or malformed data, a bad config key.

    The message must say what is wrong and what would be valid; the CLI prints it on one line
    without a traceback and exits with code 2.
    """


def one_of(kind: str, name: str, valid: list[str] | tuple[str, ...]) -> UserError:
    """An error for an unknown `name` of some `kind`, listing the valid names."""
    return UserError(f"unknown {kind} '{name}'; valid: {', '.join(sorted(valid))}")
