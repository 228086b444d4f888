"""The one exception type for bad input: the CLI prints its message on one line and exits 2."""


class CompressError(Exception):
    """A problem with the user's input (path, config, data, checkpoint), not a bug.

    The message must name the file or key at fault and what would be valid.
    """
