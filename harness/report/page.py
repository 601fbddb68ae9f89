"""The HTML page: one self-contained file with inline CSS, no script, nothing fetched.

Figures are referenced by relative file name, so the report folder can be copied or attached
to a CI run as it is. The page is a Jinja2 template with autoescaping on: every piece of text
that comes from results (variant names, messages, metadata) is escaped by the template engine,
and only the fixed markup of the template is written raw.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import jinja2

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


TEMPLATE = """<!DOCTYPE html>
{%- macro table(df, cls="") %}
<table{% if cls %} class="{{ cls }}"{% endif %}><thead><tr>
{%- for c in df.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead><tbody>
{%- for row in df.itertuples(index=False) %}<tr>
{%- for c, v in zip(df.columns, row) %}
<td{% if c == "message" %} class="msg"{% endif %}>{{ v }}</td>
{%- endfor %}</tr>
{%- endfor %}</tbody></table>
{%- endmacro %}
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title><style>{{ css }}</style></head><body>
<header><h1>{{ title }}</h1><table class="meta">
{%- for k, v in meta %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table></header>
<nav><h2>Contents</h2><ol>
{%- for s in sections %}<li><a href="#{{ s.anchor }}">{{ s.title }}</a></li>{% endfor %}</ol></nav>
{%- for s in sections %}
<section id="{{ s.anchor }}"><h2>{{ s.title }}</h2><p class="question">{{ s.question }}</p>
{%- for b in s.blocks %}
{%- if b.kind == "figure" %}
{% if b.title %}<h3>{{ b.title }}</h3>{% endif %}<figure><a href="{{ b.body }}.svg">
<img src="{{ b.body }}.png" alt="{{ b.title or b.caption }}"></a>
<figcaption>{{ b.caption }} <a href="{{ b.body }}.svg">SVG</a> · <a href="{{ b.body }}.png">PNG</a> ·
<a href="{{ b.body }}.csv">CSV</a> (the numbers drawn)</figcaption></figure>
{%- elif b.kind == "table" and b.collapsed %}
<details><summary>{{ b.title }} ({{ b.body | length }} rows)</summary>
{%- if b.caption %}<p>{{ b.caption }}</p>{% endif %}{{ table(b.body) }}</details>
{%- elif b.kind == "table" %}
{% if b.title %}<h3>{{ b.title }}</h3>{% endif %}
{%- if b.caption %}<p>{{ b.caption }}</p>{% endif %}{{ table(b.body) }}
{%- elif b.kind == "nodata" %}
<p class="nodata">No data for {% if b.title %}{{ b.title }}: {% endif %}{{ b.body }}.</p>
{%- else %}
{% if b.title %}<h3>{{ b.title }}</h3>{% endif %}<p>{{ b.body }}</p>
{%- endif %}
{%- endfor %}</section>
{%- endfor %}
<footer><p>{{ footer }}</p></footer></body></html>
"""

# autoescape: results text cannot inject markup; the CSS is the page's own, so it is marked safe.
_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False)
_ENV.globals["zip"] = zip
_PAGE = _ENV.from_string(TEMPLATE)


def render(title: str, meta: list[tuple[str, str]], sections: list[Section], footer: str = "") -> str:
    """The whole page as a string: header with the run's metadata, contents, sections."""
    return _PAGE.render(
        title=title, meta=meta, sections=sections, footer=footer, css=jinja2.utils.markupsafe.Markup(CSS)
    )
