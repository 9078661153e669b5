"""The one exception type the user sees as a one-line message."""


class DistillError(Exception):
    """A bad input or environment problem, with what went wrong and how to fix it.

    The CLI prints ``error: <message>`` and exits with status 2; the TUI shows the message.
    Raise it at boundaries (files, models, configs) with the path, the value and the fix.
    """
