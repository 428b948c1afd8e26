"""Errors that reach the user as one line and exit status 2, never as a traceback."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user (a file, a flag, a key); ``str()`` is the line to print."""
