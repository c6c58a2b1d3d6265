"""Untrusted names as text: the label a document or figure shows, and Markdown escaping.

State and LLM names are LLM output, so any of them may be HTML, Markdown, mathtext, many
kilobytes long or contain line breaks. Documents and figures show `label(name)`: whitespace
(line breaks included) collapsed to single spaces and cut to `LABEL_CHARS` characters with an
ellipsis. The full names stay in the data, the fit file and the JSON summaries.

`markdown_text` is the one escaping function of the Markdown twin (every text, heading, table
cell and caption goes through it): HTML's ``& < >`` become entities (CommonMark passes raw
HTML through, so a ``<script>`` name would otherwise run when the Markdown is rendered), the
Markdown inline syntax (``\\ ` * _ [ ] | ~``) is backslash-escaped, line breaks become spaces
(a newline would end a table row or start a heading or list), and a block marker at the start
(``#``, ``-``, ``+``, ``=``, ``1.``) is escaped. The rendered result reads as exactly the text.

`figure_label` is `label` with ``$`` escaped so matplotlib draws a ``$...$`` name literally
instead of parsing it as mathtext (an invalid expression raised when the figure was drawn).
"""

from __future__ import annotations

import html
import re
from typing import Any

#: Characters of a name shown in tables, readings and figures (docs/reports.md).
LABEL_CHARS = 60

_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")
_INLINE = re.compile(r"([\\`*_\[\]|~])")
_BLOCK_START = re.compile(r"^([#+=-])|^(\d{1,9})([.)])(?=\s|$)")


def label(name: Any, width: int = LABEL_CHARS) -> str:
    """The shown form of a name: whitespace collapsed, at most `width` characters (…)."""
    text = " ".join(str(name).split())
    if len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + "…"


def figure_label(name: Any, width: int = LABEL_CHARS) -> str:
    """`label` for matplotlib: ``$`` escaped so the name is never parsed as mathtext."""
    return label(name, width).replace("$", r"\$")


def markdown_text(text: Any) -> str:
    """`text` escaped for Markdown (CommonMark + GFM tables) so it renders as itself."""
    out = _LINE_BREAKS.sub(" ", str(text)).strip()
    out = html.escape(out, quote=False)
    out = _INLINE.sub(r"\\\1", out)
    return _BLOCK_START.sub(_escape_marker, out, count=1)


def _escape_marker(match: re.Match[str]) -> str:
    if match.group(1):
        return "\\" + match.group(1)
    return match.group(2) + "\\" + match.group(3)
