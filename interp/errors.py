"""User-facing errors: the CLI prints one line and exits 2, never a traceback."""


class InterpError(Exception):
    """A mistake in what the user asked for (bad name, bad file, bad argument)."""

    exit_code = 2
