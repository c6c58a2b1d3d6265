"""A small document builder that writes one self-contained HTML file and its Markdown twin.

HTML: every figure is embedded as a base64 PNG (`data:` URI), styles are inline, no script, no
font or stylesheet from the network — the file opens anywhere, offline. Markdown: the same text
and tables, figures written as PNG files beside it (``<stem>_figures/``) and linked relatively.
Names are untrusted text: the HTML escapes every text with `html.escape`, the Markdown with
`text.markdown_text` (CommonMark passes raw HTML through, so escaping there matters as much).
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from detailed_balance.data.files import atomic_path, write_text_atomic

from .text import markdown_text

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0;
       color: #1d2733; background: #f7f8fa; line-height: 1.45; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #dde3ea;
     padding-bottom: 4px; margin-top: 1.8em; } .sub { color: #5b6b7c; margin-top: 0; }
.verdict { display: inline-block; padding: 6px 14px; border-radius: 6px; font-weight: 600;
           font-size: 1.15em; } .holds { background: #e3f4e6; color: #1b5e20; }
.violated { background: #fde4e1; color: #b71c1c; } .inconclusive { background: #fff4d6;
           color: #7a5b00; } .neutral { background: #e8eef6; color: #1f4e79; }
.reading { background: #f1f6fb; border-left: 4px solid #1f4e79; padding: 10px 16px; }
table { border-collapse: collapse; margin: 10px 0 16px; font-size: 0.9em; }
th, td { border: 1px solid #dde3ea; padding: 4px 10px; text-align: right; }
th { background: #f1f4f8; } td:first-child, th:first-child { text-align: left; }
figure { margin: 14px 0 22px; } figure img { max-width: 100%; height: auto;
         border: 1px solid #eef1f5; } figcaption { color: #5b6b7c; font-size: 0.9em; }
code { background: #f1f4f8; padding: 1px 4px; border-radius: 3px; }
footer { color: #7b8794; font-size: 0.85em; margin-top: 2em; }
"""


@dataclass
class Block:
    kind: str  # "heading" | "text" | "table" | "figure" | "verdict" | "reading"
    payload: Any
    extra: dict[str, Any] = field(default_factory=dict)


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """PNG bytes of a matplotlib Figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        return f"{value:.3g}"
    return str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "figure"


class Document:
    """Headings, paragraphs, tables and figures, rendered to HTML and Markdown."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self.blocks: list[Block] = []

    def heading(self, text: str) -> None:
        self.blocks.append(Block("heading", text))

    def text(self, text: str) -> None:
        self.blocks.append(Block("text", text))

    def reading(self, text: str) -> None:
        """The plain-language reading, highlighted."""
        self.blocks.append(Block("reading", text))

    def verdict(self, verdict: str, label: str = "Detailed balance") -> None:
        self.blocks.append(Block("verdict", verdict, {"label": label}))

    def table(self, frame: pd.DataFrame, caption: str = "", max_rows: int = 40) -> None:
        self.blocks.append(Block("table", frame.head(max_rows), {"caption": caption}))

    def figure(self, fig: Figure, caption: str) -> None:
        """Render now (PNG bytes) so the Figure can be garbage-collected."""
        self.blocks.append(Block("figure", figure_png(fig), {"caption": caption}))

    # -- rendering -------------------------------------------------------------------------------
    def to_html(self) -> str:
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head>",
            f"<body><main><h1>{html.escape(self.title)}</h1>",
            f'<p class="sub">{html.escape(self.subtitle)}</p>',
        ]
        for block in self.blocks:
            parts.append(self._html_block(block))
        parts.append("</main></body></html>")
        return "\n".join(parts)

    def _html_block(self, block: Block) -> str:
        if block.kind == "heading":
            return f"<h2>{html.escape(block.payload)}</h2>"
        if block.kind == "text":
            return f"<p>{html.escape(block.payload)}</p>"
        if block.kind == "reading":
            return f'<p class="reading">{html.escape(block.payload)}</p>'
        if block.kind == "verdict":
            word = str(block.payload)
            css = word if word in ("holds", "violated", "inconclusive") else "neutral"
            label = html.escape(block.extra["label"])
            return f'<p><span class="verdict {css}">{label}: {html.escape(word.upper())}</span></p>'
        if block.kind == "table":
            frame: pd.DataFrame = block.payload
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                for row in frame.itertuples(index=False)
            )
            caption = block.extra["caption"]
            cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
            return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
        if block.kind == "figure":
            data = base64.b64encode(block.payload).decode("ascii")
            caption = html.escape(block.extra["caption"])
            return (
                f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
        raise ValueError(f"unknown block kind {block.kind!r}")

    def to_markdown(self, figure_dir: Path | None = None, link_prefix: str = "") -> str:
        """Markdown; figures are written to `figure_dir` (if given) and linked.

        Every text (title, headings, paragraphs, table cells, captions) goes through
        `markdown_text`, so names holding HTML or Markdown syntax render as text."""
        md = markdown_text
        lines = [f"# {md(self.title)}", "", f"_{md(self.subtitle)}_" if self.subtitle else "", ""]
        count = 0
        for block in self.blocks:
            if block.kind == "heading":
                lines += [f"## {md(block.payload)}", ""]
            elif block.kind in ("text", "reading"):
                prefix = "> " if block.kind == "reading" else ""
                lines += [prefix + md(block.payload), ""]
            elif block.kind == "verdict":
                lines += [f"**{md(block.extra['label'])}: {md(str(block.payload).upper())}**", ""]
            elif block.kind == "table":
                frame = block.payload
                if block.extra["caption"]:
                    lines += [f"*{md(block.extra['caption'])}*", ""]
                lines.append("| " + " | ".join(md(c) for c in frame.columns) + " |")
                lines.append("|" + "---|" * len(frame.columns))
                for row in frame.itertuples(index=False):
                    lines.append("| " + " | ".join(md(_cell(v)) for v in row) + " |")
                lines.append("")
            elif block.kind == "figure":
                count += 1
                name = f"{count:02d}-{_slug(block.extra['caption'])[:40]}.png"
                if figure_dir is not None:
                    with atomic_path(figure_dir / name, "figure") as tmp:
                        tmp.write_bytes(block.payload)
                lines += [f"![{md(block.extra['caption'])}]({link_prefix}{name})", ""]
        return "\n".join(lines)

    def write(
        self,
        html_path: str | Path,
        summary: dict[str, Any] | None = None,
        summary_path: str | Path | None = None,
    ) -> dict[str, Path]:
        """Write `X.html`, its twin `X.md` (+ `X_figures/`) and, if given, the summary JSON
        (default `X.json` beside the HTML, so two reports in one folder keep their own).

        Each file is written atomically (temporary sibling + rename): a killed write leaves the
        previous file or the new one, never a truncated one."""
        html_path = Path(html_path)
        write_text_atomic(html_path, self.to_html(), "report")
        md_path = html_path.with_suffix(".md")
        figure_dir = html_path.with_name(f"{html_path.stem}_figures")
        markdown = self.to_markdown(figure_dir, f"{figure_dir.name}/")
        write_text_atomic(md_path, markdown, "Markdown report")
        written = {"html": html_path, "markdown": md_path}
        if summary is not None:
            json_path = Path(summary_path or summary_path_for(html_path))
            text = json.dumps(summary, indent=2, default=_json_default) + "\n"
            write_text_atomic(json_path, text, "summary")
            written["summary"] = json_path
        return written


def summary_path_for(html_path: str | Path) -> Path:
    """The summary JSON written beside a report: `X.html` → `X.json`."""
    return Path(html_path).with_suffix(".json")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
