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


def one_line(err: BaseException) -> str:
    """A library's exception as one line, its class and first line: some messages run over several
    lines (pydicom lists every decoder plugin it tried); the whole text is there with --debug."""
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    return f"{err.__class__.__name__}: {first}" if first else err.__class__.__name__
