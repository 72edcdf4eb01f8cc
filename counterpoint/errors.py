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

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MISSING", "OptionError", "RunMismatchError"]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


# The value of an OptionError about something that was not given at all.
MISSING: Any = _Missing()


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
        """The message, naming the argument as ``argument=value`` or, with ``flag``, ``flag value``.

        A :data:`MISSING` value (nothing was given) is left out: ``amateur_prompt is needed by ...``. On the command
        line a string is shown as typed and a tuple as the comma-separated list it was typed as.
        """
        if self.value is MISSING:
            return f"{flag or self.argument} {self.problem}"
        if flag is None:
            return f"{self.argument}={self.value!r} {self.problem}"
        if isinstance(self.value, str):
            shown = self.value
        elif isinstance(self.value, tuple | list):
            shown = ",".join(map(str, self.value))
        else:
            shown = repr(self.value)
        return f"{flag} {shown} {self.problem}"


class RunMismatchError(ValueError):
    """An output file that this run cannot resume: another run wrote it, or nothing shows which.

    The library words option names as the caller passed them; the command line can show its flags
    instead with :meth:`render`:

        >>> err = RunMismatchError("out.jsonl", options=[("temperature", 0.7, 1.0)])
        >>> str(err)
        "cannot resume 'out.jsonl', written by another run: temperature 0.7 there, 1.0 now; pass --overwrite to start it again"
        >>> err.render({"temperature": "--temperature"})
        "cannot resume 'out.jsonl', written by another run: --temperature 0.7 there, 1.0 now; pass --overwrite to start it again"

    Args:
        path: the output file.
        options: ``(name, value there, value now)`` for each option that differs; a side that does
            not have the option holds :data:`RunMismatchError.UNSET`.
        problems: the other differences, each worded to stand alone (``"the input rows changed
            (first differing row: index 3)"``).
        reason: replaces "written by another run" when the run cannot be told (a missing record).
    """

    UNSET: Any = None  # set below: the one _Unset instance

    def __init__(
        self,
        path: str,
        *,
        options: Sequence[tuple[str, Any, Any]] = (),
        problems: Sequence[str] = (),
        reason: str | None = None,
    ) -> None:
        self.path = str(path)
        self.options = list(options)
        self.problems = list(problems)
        self.reason = reason
        super().__init__(self.render())

    def render(self, flags: Mapping[str, str] | None = None) -> str:
        """The message, one line; ``flags`` maps option names to how the command line spells them."""
        if self.reason is not None:
            return f"cannot resume {self.path!r}: {self.reason}; pass --overwrite to start it again"
        flags = flags or {}
        parts = [
            f"{flags.get(name, name)} {_shown(old, 'not set')} there, {_shown(new, 'not set')} now"
            for name, old, new in self.options
        ]
        parts += self.problems
        return f"cannot resume {self.path!r}, written by another run: {'; '.join(parts)}; pass --overwrite to start it again"


class _Unset:
    """A value a run did not set (an option only one of two runs has)."""

    def __repr__(self) -> str:
        return "UNSET"


RunMismatchError.UNSET = _Unset()


def _shown(value: Any, unset: str, limit: int = 60) -> str:
    """An option value as JSON (what the run record holds), cut short when long."""
    import json

    if value is RunMismatchError.UNSET:
        return unset
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."
