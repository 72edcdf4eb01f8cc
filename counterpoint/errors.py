"""Errors a user can fix, shared by the library and the command line.

The library names arguments the way its API spells them (``model=``, ``alpha=``); the command line
shows the same error with its own flag (``--model``, ``--alpha``). :class:`OptionError` keeps the
parts apart so that both can word it:

    >>> err = OptionError("alpha", 1.5, "must be in [0, 1]")
    >>> str(err)
    'alpha=1.5 must be in [0, 1]'
    >>> err.render("--alpha")
    '--alpha 1.5 must be in [0, 1]'
"""

from __future__ import annotations

from typing import Any

__all__ = ["OptionError"]


class OptionError(ValueError):
    """A bad value for one named argument or option.

    Args:
        argument: the API name of the argument (``"alpha"``, ``"model"``, ``"layers"``).
        value: the value given.
        problem: what is wrong and what would be valid, worded to follow the value
            (``"must be in [0, 1] (0 is greedy)"``, ``"is not a local folder or file; ..."``).
    """

    def __init__(self, argument: str, value: Any, problem: str) -> None:
        self.argument = argument
        self.value = value
        self.problem = problem
        super().__init__(self.render())

    def render(self, flag: str | None = None) -> str:
        """The message, naming the argument as ``argument=value`` or, with ``flag``, ``flag value``."""
        shown = self.value if isinstance(self.value, str) and flag is not None else repr(self.value)
        if flag is None:
            return f"{self.argument}={self.value!r} {self.problem}"
        return f"{flag} {shown} {self.problem}"
