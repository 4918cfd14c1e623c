"""Regular expressions a caller supplies (nova's name, ip and ip6 list filters), run by RE2.

Python's backtracking engine takes exponential time on patterns such as `^(a+)+$`; RE2 matches in
time linear in the text, so one request cannot stall the API. nova hands these patterns to the
database; an invalid one, or one only a backtracking engine can run (back-references,
look-arounds), is nova's 400.
"""

from __future__ import annotations

from typing import Protocol

import re2

from eventsvm.api.errors import BadRequest

# nova's query schema caps a regex filter at 255 characters
MAX_PATTERN = 255


class UserPattern(Protocol):
    """What a list filter asks of a compiled pattern: a match anywhere, or from the start."""

    def search(self, text: str) -> object: ...

    def match(self, text: str) -> object: ...


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a caller's typo is a 400, not a line on the server's stderr
    options.never_capture = True  # filters only ask "does it match"
    return options


_OPTIONS = _options()


def user_pattern(pattern: str | None, field: str) -> UserPattern | None:
    """`pattern` compiled for the `field` filter; None when absent; 400 when RE2 cannot run it."""
    if pattern is None:
        return None
    try:
        compiled: UserPattern = re2.compile(pattern[:MAX_PATTERN], options=_OPTIONS)
    except (re2.error, UnicodeError, ValueError, TypeError):
        raise BadRequest(f"Invalid regular expression for filter {field}") from None
    return compiled
