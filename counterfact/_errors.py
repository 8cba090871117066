"""The root of the errors a person can fix: the CLI prints these as one line, not a traceback."""


class CounterfactError(Exception):
    """Bad input or configuration, with a one-line message naming what was wrong."""
