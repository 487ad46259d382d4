"""User-facing errors: one line that says what is wrong and how to fix it."""
from __future__ import annotations

import difflib
from typing import Iterable


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
