"""``index.html``: one self-contained page per report, readable offline straight from disk.

Images are embedded as base64 ``data:`` URIs and tables are plain HTML; the page loads nothing
from the network (no scripts, fonts or style sheets from elsewhere).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

import pandas as pd

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.note { color: #555; } .warn { color: #a15c00; font-weight: 600; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: .6em 0; }
th, td { padding: 3px 9px; border-bottom: 1px solid #e4e4e4; text-align: right; white-space: nowrap; }
th { background: #f4f6f8; } tbody th { text-align: left; }
img { max-width: 100%; height: auto; border: 1px solid #eee; margin: .5em 0; }
details summary { cursor: pointer; color: #2a5db0; }
"""


@dataclass
class Section:
    """One ``<h2>`` block of the page: a title and its HTML body parts, in order."""

    title: str
    parts: list[str] = field(default_factory=list)

    def text(self, message: str, css: str = "note") -> Section:
        """Add an escaped paragraph."""
        self.parts.append(f'<p class="{css}">{html.escape(message)}</p>')
        return self

    def table(self, frame: pd.DataFrame, digits: int = 4, collapsed: str | None = None) -> Section:
        """Add a table; ``collapsed`` puts it in a ``<details>`` block with that summary line."""
        body = f'<div class="scroll">{table_html(frame, digits)}</div>'
        if collapsed:
            body = f"<details><summary>{html.escape(collapsed)}</summary>{body}</details>"
        self.parts.append(body)
        return self

    def image(self, png: bytes, alt: str) -> Section:
        """Add a PNG, embedded as a base64 data URI."""
        self.parts.append(png_img(png, alt))
        return self

    def links(self, names: list[str]) -> Section:
        """Add relative links to files written next to ``index.html``."""
        items = ", ".join(f'<a href="{html.escape(n)}">{html.escape(n)}</a>' for n in names)
        self.parts.append(f'<p class="note">Files: {items}</p>')
        return self

    def render(self) -> str:
        """The section as HTML: its title and parts."""
        return f"<section><h2>{html.escape(self.title)}</h2>\n" + "\n".join(self.parts) + "\n</section>"


def png_img(png: bytes, alt: str) -> str:
    """An ``<img>`` tag carrying ``png`` inline."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def table_html(frame: pd.DataFrame, digits: int = 4) -> str:
    """A DataFrame as an HTML table (cells escaped, floats to ``digits`` places, blanks as a dash)."""
    return frame.to_html(float_format=lambda v: f"{v:.{digits}f}", na_rep="-", border=0, escape=True,
                         index_names=False)


def render_page(title: str, subtitle: list[str], sections: list[Section]) -> str:
    """The whole page: title, status lines, then each section."""
    lines = "\n".join(f'<p class="{css}">{html.escape(text)}</p>' for text, css in _status_lines(subtitle))
    body = "\n".join(s.render() for s in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{lines}\n{body}\n</body>\n</html>\n"
    )


def _status_lines(lines: list[str]) -> list[tuple[str, str]]:
    # A line about something missing is a warning the reader should not overlook.
    return [(line, "warn" if "missing" in line.lower() else "note") for line in lines]
