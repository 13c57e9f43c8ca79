"""A small document model, rendered to Markdown and to one self-contained HTML page.

A document is a list of blocks: :class:`Heading`, :class:`Para`, :class:`BulletList`, :class:`Table`,
:class:`Image`, :class:`ImageRow` and :class:`Code`. Text may use `code` and **bold**, the only inline markup.
:func:`to_markdown` writes pictures as paths relative to a root folder; :func:`to_html` embeds them as base64 PNG
and inlines its CSS, so the page needs no other file.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CSS",
    "Block",
    "BulletList",
    "Code",
    "Heading",
    "Image",
    "ImageRow",
    "Para",
    "Table",
    "to_html",
    "to_markdown",
]

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; line-height: 1.45; }
main { max-width: 1150px; margin: 2em auto; padding: 0 1em; }
h1, h2, h3 { line-height: 1.2; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
code { background: #f3f3f3; padding: 0 .2em; border-radius: 3px; }
pre { background: #f6f8fa; padding: .8em; overflow: auto; font-size: .85em; }
pre code { background: none; padding: 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; }
figcaption { font-size: .9em; color: #555; }
.row { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.row figure { margin: 0; } .row img { image-rendering: pixelated; min-width: 128px; }
"""


@dataclass
class Heading:
    """A section title."""

    level: int
    text: str


@dataclass
class Para:
    """A paragraph; `code` and **bold** are the only inline markup."""

    text: str


@dataclass
class BulletList:
    """An unordered list of one-paragraph items; an empty list is left out."""

    items: list[str]


@dataclass
class Table:
    """A table of already formatted cells."""

    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    """One PNG picture with a caption shown beneath it (none when empty); ``alt`` defaults to the caption."""

    path: Path
    caption: str = ""
    alt: str | None = None

    @property
    def alt_text(self) -> str:
        """The picture's alternative text."""
        return self.caption if self.alt is None else self.alt


@dataclass
class ImageRow:
    """Pictures side by side, each with its caption."""

    items: list[Image]


@dataclass
class Code:
    """A literal block."""

    text: str
    lang: str = ""


Block = Heading | Para | BulletList | Table | Image | ImageRow | Code


def to_markdown(blocks: list[Block], root: Path | None = None) -> str:
    """The document as Markdown, pictures as paths relative to ``root`` (as given without one)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    def rel(path: Path) -> str:
        return (path if root is None else path.relative_to(root)).as_posix()

    parts = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            parts.append(b.text)
        elif isinstance(b, BulletList):
            if b.items:
                parts.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table) and not b.rows:
            parts.append("*(none)*")
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(cell(h) for h in b.header) + " |", "|" + "---|" * len(b.header)]
            lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in b.rows]
            parts.append("\n".join(lines))
        elif isinstance(b, Image):
            parts.append(f"![{b.alt_text}]({rel(b.path)})" + (f"\n\n*{b.caption}*" if b.caption else ""))
        elif isinstance(b, ImageRow):
            lines = ["| " + " | ".join(cell(i.caption) for i in b.items) + " |", "|" + "---|" * len(b.items)]
            lines.append("| " + " | ".join(f"![{cell(i.alt_text)}]({rel(i.path)})" for i in b.items) + " |")
            parts.append("\n".join(lines))
        elif isinstance(b, Code):
            parts.append(f"```{b.lang}\n{b.text.rstrip()}\n```")
        else:
            raise TypeError(f"not a document block: {b!r}")
    return "\n\n".join(parts) + "\n"


def _inline(text: str) -> str:
    """Escape text for HTML and turn `code` and **bold** into tags."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)


def _data_uri(path: Path) -> str:
    """A PNG file as a data URI, so the HTML needs no other file."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def to_html(blocks: list[Block], title: str, css: str = CSS) -> str:
    """The document as one self-contained HTML page: inline CSS, pictures embedded as base64 PNG."""

    def img(i: Image) -> str:
        src, alt = _data_uri(i.path), html.escape(i.alt_text)
        cap = f"<figcaption>{_inline(i.caption)}</figcaption>" if i.caption else ""
        return f'<figure><img src="{src}" alt="{alt}">{cap}</figure>'

    parts = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            parts.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, BulletList):
            if b.items:
                parts.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in b.items) + "</ul>")
        elif isinstance(b, Table) and not b.rows:
            parts.append("<p><em>(none)</em></p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Image):
            parts.append(img(b))
        elif isinstance(b, ImageRow):
            parts.append('<div class="row">' + "".join(img(i) for i in b.items) + "</div>")
        elif isinstance(b, Code):
            parts.append(f"<pre><code>{html.escape(b.text.rstrip())}</code></pre>")
        else:
            raise TypeError(f"not a document block: {b!r}")
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{css}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )
