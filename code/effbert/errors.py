"""The one exception a user is meant to read: bad input, named by file and key or line."""


class InputError(Exception):
    """Input that the pipeline cannot use. The message names the file (and key or line) and what was expected."""
