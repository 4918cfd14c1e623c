"""What text may hold to be shown as it is: nova's rule for names, and the escaping the operator's
commands apply to anything else read from the log before it reaches a terminal."""

from __future__ import annotations

import unicodedata


def printable(char: str) -> bool:
    """Nova's rule (parameter_types._is_printable): no "other" character (controls, escapes, format
    characters such as bidi overrides, surrogates, unassigned) and no separator but a space."""
    category = unicodedata.category(char)
    return not category.startswith("C") and (not category.startswith("Z") or category == "Zs")


def escaped(text: str) -> str:
    """`text` with each character that is not printable written as a Python escape (\\x1b, \\u202e),
    so a name, reason or key from the log can never move a terminal's cursor or recolour it."""
    if all(map(printable, text)):
        return text
    out = []
    for char in text:
        if printable(char):
            out.append(char)
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000
                       else f"\\U{code:08x}")
    return "".join(out)
