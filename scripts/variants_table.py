"""Print the registered variants as the markdown table docs/settings.md shows, or rewrite it there.

    python scripts/variants_table.py            # print it
    make variants-table                         # rewrite docs/settings.md between its markers

The table is generated from the registry, never edited by hand: each row says what the
variant's own registration says (its kind, targets, devices, failure mechanisms, description).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from pathlib import Path

from harness.cross_entropy.variants import REGISTRY
from harness.registry import Variant

# The page that holds the table (its "## Variants" section); README.md links to it.
DOC = Path(__file__).resolve().parent.parent / "docs" / "settings.md"
START, END = "<!-- variants-table -->", "<!-- /variants-table -->"
HEADER = ["| variant | targets | devices | loss options | what it is |", "|---|---|---|---|---|"]


def row(v: Variant) -> str:
    note = v.description.replace("|", "\\|")
    if v.expected_wrong:
        note = f"**wrong on purpose:** {v.expected_wrong.replace('|', '/')}. {note}"
    elif v.breaks_by:
        note = f"**breaks at large logit scales** ({', '.join(v.breaks_by)}). {note}"
    if v.overwrites_input:
        note += " (overwrites its input by design)"
    options = ", ".join(sorted(v.options)) or "-"
    kinds, devices = ", ".join(sorted(v.targets)), ", ".join(sorted(v.devices))
    return f"| `{v.name}` | {kinds} | {devices} | {options} | {note} |"


def table(variants: Iterable[Variant] | None = None) -> str:
    """The table of `variants` (default: the registry, in its order)."""
    return "\n".join([*HEADER, *(row(v) for v in (REGISTRY.values() if variants is None else variants))])


def block(variants: Iterable[Variant] | None = None) -> str:
    return f"{START}\n{table(variants)}\n{END}"


def write(doc: Path = DOC) -> None:
    text = doc.read_text()
    pattern = re.compile(re.escape(START) + r".*?(" + re.escape(END) + r"|$)", re.S)
    doc.write_text(pattern.sub(lambda _: block(), text, count=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite docs/settings.md between its markers")
    args = parser.parse_args()
    if args.write:
        write()
    else:
        print(table())


if __name__ == "__main__":
    main()
