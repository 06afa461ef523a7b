"""Text from a server or a token made safe to print: one line, nothing a terminal acts on."""

from __future__ import annotations

import re

# A terminal's escape sequences (CSI, as ESC [ or C1 U+009B, and OSC up to BEL or ST), dropped
# whole so that none of their parameters is left behind.
_ESCAPE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
)
# What a terminal acts on instead of printing: C0, DEL and C1 controls, and the marks and
# overrides of bidirectional text (which can show a line in another order than it is).
_CONTROL = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def printable(text: str) -> str:
    """`text` on one line with nothing a terminal would act on: escape sequences dropped,
    line breaks and tabs made spaces, every other control character dropped."""
    text = _ESCAPE.sub("", text)
    text = re.sub(r"[\t\n\v\f\r\x85\u2028\u2029]+", " ", text)
    return _CONTROL.sub("", text)
