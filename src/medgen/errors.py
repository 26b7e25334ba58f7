"""Errors the CLI turns into exit codes.

UserError is anything the user can fix (bad file, bad option, existing output): exit 2 with a
one-line message. Anything else escaping the CLI is an internal error: exit 1.
"""
from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, files or options (exit code 2)."""

    def __init__(self, message: str, path: object | None = None):
        self.path = str(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InputFileError(UserError):
    """A single input file could not be read or is not usable; prepare records it in rejected.csv."""
