"""User-facing errors: one line that says what is wrong and how to fix it."""
from __future__ import annotations

import contextlib
import difflib
from contextvars import ContextVar
from typing import Iterable, Iterator

# who called: "cli" while an `edgeood` command runs, else "python". Errors raised deep in the
# library name an option the way the caller wrote it (spell).
_CALLER: ContextVar[str] = ContextVar("edgeood_caller", default="python")


class EdgeoodError(Exception):
    """A problem with the user's input or environment (not a bug in edgeood).

    The CLI prints the message as a single line and exits non-zero, so the message must name
    the problem and the fix.
    """


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """' (did you mean a, b?)' for the closest choices, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def nearest(name: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """The n choices closest to name (always returns something when choices is non-empty)."""
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.0)
    return close or choices[:n]


def spell(option: str) -> str:
    """An option in the caller's words: `--int8-method` on the command line, `int8_method` from
    Python."""
    return "--" + option.replace("_", "-") if _CALLER.get() == "cli" else option


@contextlib.contextmanager
def called_from(caller: str) -> Iterator[None]:
    """Errors raised inside the block spell options for this caller ("cli" or "python")."""
    token = _CALLER.set(caller)
    try:
        yield
    finally:
        _CALLER.reset(token)
