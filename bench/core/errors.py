"""Errors that the CLI turns into exit code 2 with a one-line message."""

PROG = "florence2-bench"  # the command's name, which starts each of its one-line messages


class UsageError(Exception):
    """Bad input from the user: names the offending value and what would be accepted."""


def choice_error(kind: str, value: object, accepted) -> UsageError:
    """The standard one-line message for a value outside a fixed set."""
    return UsageError(f"unknown {kind} {value!r}; accepted: {', '.join(map(str, accepted))}")


class CellSkipped(Exception):
    """A valid cell that cannot run on its data: it becomes a ``skipped`` record and the sweep goes on."""
