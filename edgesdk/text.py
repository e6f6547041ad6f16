"""Untrusted text made fit to show: the one sanitiser for strings from a board, a confined child, or a model file.

`visible(value)` turns every character of Unicode category Cc, Cf, Cs, Zl or Zp (controls and the ESC of escape
sequences, bidi overrides, zero-width characters, U+FEFF, lone surrogates, U+2028, U+2029) into its visible
\\xNN / \\uNNNN form; tab and newline stay. edgesdk.cli.common.safe_text adds rich-markup escaping on top.
"""

from __future__ import annotations

import unicodedata
from typing import Any

#: Unicode categories a terminal does not show as themselves: controls (Cc: C0, DEL, C1), format characters (Cf:
#: bidi overrides, zero-width spaces and joiners, U+FEFF, the soft hyphen), lone surrogates (Cs), line and
#: paragraph separators (Zl, Zp: U+2028, U+2029): what a board string could use to retitle the terminal, clear it,
#: hide or reorder text, or draw a fake link (OSC 8)
INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _visible(c: str) -> str:
    if c in "\n\t" or unicodedata.category(c) not in INVISIBLE:
        return c
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def visible(value: Any, limit: int | None = None) -> str:
    """str(value) with every invisible character shown as its escape (see the module), cut to `limit` characters
    (then ending " ...") when given."""
    text = str(value)
    if not text.isascii() or not text.isprintable():
        text = "".join(map(_visible, text))
    return text if limit is None or len(text) <= limit else text[:limit] + " ..."
