"""The one exception type for bad input: the CLI prints its message on one line and exits 2."""


class CompressError(Exception):
    """A problem with the user's input (path, config, data, checkpoint), not a bug.

    The message must name the file or key at fault and what would be valid.
    """


def summary(exc: BaseException, width: int = 160) -> str:
    """`Type: first line of the message` (cut at `width`), for one-line reports of a library's
    exception; an empty message leaves the type alone."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:width]}" if lines else type(exc).__name__
