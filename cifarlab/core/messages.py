"""Values inside error messages, cut to a readable length: a message is one line a person reads.

A config value can be megabytes long (a pasted file, a sweep of 8,000 runs, YAML aliases): printed
whole, one mistake printed a 39 MB line (issue 26). `shown` gives a value's repr cut to
MAX_SHOWN_CHARS, saying how long the value was; `shown_names` a list of names, the first few and
the count. Built with reprlib, so a huge or deeply nested value is never rendered in full first.
Imports nothing of cifarlab.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from typing import Any

# The most characters of one value that a message shows.
MAX_SHOWN_CHARS = 300
# The most names a message lists (of runs, classes, keys); the rest are counted.
MAX_SHOWN_NAMES = 20

# The most items of one list or mapping that a message shows.
MAX_SHOWN_ITEMS = 12

_REPR = reprlib.Repr()  # (keyword arguments need Python 3.12)
_REPR.maxlevel = 4
_REPR.maxdict = _REPR.maxlist = _REPR.maxtuple = _REPR.maxset = MAX_SHOWN_ITEMS
_REPR.maxstring = _REPR.maxother = MAX_SHOWN_CHARS


def _size(value: Any) -> str:
    """How long a value is, in words: `a text of 1,000,000 characters`, `a list of 8,000 items`."""
    if isinstance(value, str):
        return f"a text of {len(value):,} characters"
    if isinstance(value, dict | list | tuple | set):
        return f"a {type(value).__name__} of {len(value):,} items"
    return type(value).__name__


def shown(value: Any) -> str:
    """repr(value) for a message, at most about MAX_SHOWN_CHARS long: a longer text is cut, a
    container shows its first MAX_SHOWN_ITEMS items (reprlib), each followed by
    `... (cut: a text of N characters)` or `(cut: a list of N items)`."""
    if isinstance(value, str):
        if len(value) <= MAX_SHOWN_CHARS:
            return repr(value)
        return f"{value[:MAX_SHOWN_CHARS]!r}... (cut: {_size(value)})"
    text = _REPR.repr(value)
    long = isinstance(value, dict | list | tuple | set) and len(value) > MAX_SHOWN_ITEMS
    if len(text) > MAX_SHOWN_CHARS:
        text, long = text[:MAX_SHOWN_CHARS] + "...", True
    return f"{text} (cut: {_size(value)})" if long else text


def shown_names(names: Iterable[Any]) -> str:
    """A list of names for a message: all of them up to MAX_SHOWN_NAMES, else the first ones and the count."""
    names = list(names)
    head = [shown(name) for name in names[:MAX_SHOWN_NAMES]]
    more = len(names) - len(head)
    return "[" + ", ".join(head) + (f", ... ({len(names):,} in all)" if more else "") + "]"


def cut(text: str, limit: int = MAX_SHOWN_CHARS * 2) -> str:
    """A message part made by another library (jsonschema's, which holds the whole value), cut to
    `limit` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... (cut: {len(text):,} characters in all)"
