"""The HTML page: one self-contained file with inline CSS, no script, nothing fetched.

Figures are referenced by relative file name, so the report folder can be copied or attached
to a CI run as it is. Every piece of text that comes from results (variant names, messages,
metadata) passes through `esc`; only the fixed markup below is written raw.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import pandas as pd

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1280px; margin: 0 auto; padding: 0 24px 48px; }
h1 { font-size: 1.6em; margin: 24px 0 4px; }
h2 { font-size: 1.25em; margin-top: 40px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 1.05em; margin-top: 24px; }
p.question { font-style: italic; color: #444; margin-top: 0; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
table.meta th { width: 9em; }
td.msg { font-family: ui-monospace, monospace; font-size: 12px; max-width: 640px; word-break: break-word; }
.nodata { color: #8a6d3b; background: #fcf8e3; border: 1px solid #faebcc; padding: 6px 10px;
          display: inline-block; }
figure { margin: 8px 0 24px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #555; }
nav ol { columns: 2; }
details { margin: 8px 0; }
"""


def esc(text: object) -> str:
    """HTML-escape anything (quotes too, since text also lands in attributes)."""
    return html.escape(str(text), quote=True)


@dataclass
class Block:
    """One piece of a section: a figure, a table, a paragraph or a 'no data' note."""

    kind: str  # figure | table | text | nodata
    title: str = ""
    body: object = None  # figure: file stem; table: DataFrame; text/nodata: str
    caption: str = ""
    collapsed: bool = False  # tables: shown inside <details> (long reference tables)


@dataclass
class Section:
    anchor: str
    title: str
    question: str
    blocks: list[Block] = field(default_factory=list)


def _table(df: pd.DataFrame, cls: str = "") -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in df.columns)
    rows = []
    for _, r in df.iterrows():
        cells = "".join(
            f'<td class="msg">{esc(v)}</td>' if c == "message" else f"<td>{esc(v)}</td>" for c, v in r.items()
        )
        rows.append(f"<tr>{cells}</tr>")
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _block(b: Block) -> str:
    title = f"<h3>{esc(b.title)}</h3>" if b.title else ""
    if b.kind == "figure":
        stem = esc(b.body)
        return (
            f'{title}<figure><a href="{stem}.svg">'
            f'<img src="{stem}.png" alt="{esc(b.title or b.caption)}"></a>'
            f'<figcaption>{esc(b.caption)} <a href="{stem}.svg">SVG</a> · '
            f'<a href="{stem}.png">PNG</a> · <a href="{stem}.csv">CSV</a> (the numbers drawn)'
            "</figcaption></figure>"
        )
    if b.kind == "table":
        table = _table(b.body)
        cap = f"<p>{esc(b.caption)}</p>" if b.caption else ""
        if b.collapsed:
            return f"<details><summary>{esc(b.title)} ({len(b.body)} rows)</summary>{cap}{table}</details>"
        return f"{title}{cap}{table}"
    if b.kind == "nodata":
        what = f"{b.title}: " if b.title else ""
        return f'<p class="nodata">No data for {esc(what)}{esc(b.body)}.</p>'
    return f"{title}<p>{esc(b.body)}</p>"


def render(title: str, meta: list[tuple[str, str]], sections: list[Section], footer: str = "") -> str:
    """The whole page as a string: header with the run's metadata, contents, sections."""
    meta_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in meta)
    toc = "".join(f'<li><a href="#{esc(s.anchor)}">{esc(s.title)}</a></li>' for s in sections)
    body = []
    for s in sections:
        body.append(
            f'<section id="{esc(s.anchor)}"><h2>{esc(s.title)}</h2>'
            f'<p class="question">{esc(s.question)}</p>{"".join(_block(b) for b in s.blocks)}</section>'
        )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>{esc(title)}</h1><table class="meta">{meta_rows}</table></header>'
        f"<nav><h2>Contents</h2><ol>{toc}</ol></nav>"
        f"{''.join(body)}"
        f"<footer><p>{esc(footer)}</p></footer></body></html>\n"
    )
