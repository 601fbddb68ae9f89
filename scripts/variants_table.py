"""Print the registered variants as the markdown table the README shows.

    python scripts/variants_table.py            # print it
    python scripts/variants_table.py --write    # rewrite README.md between its markers

tests/test_readme.py fails when the README's table and the registry disagree.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from harness.variants import REGISTRY

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- variants-table -->", "<!-- /variants-table -->"


def table() -> str:
    lines = ["| variant | targets | devices | what it is |", "|---|---|---|---|"]
    for v in REGISTRY.values():
        note = v.description.replace("|", "\\|")
        if v.expected_wrong:
            note = f"**wrong on purpose:** {v.expected_wrong.replace('|', '/')}. {note}"
        elif not v.stable:
            note = f"**breaks at large logit scales.** {note}"
        lines.append(f"| `{v.name}` | {', '.join(sorted(v.targets))} | {', '.join(sorted(v.devices))} | {note} |")
    return "\n".join(lines)


def block() -> str:
    return f"{START}\n{table()}\n{END}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite README.md between its markers")
    args = parser.parse_args()
    if not args.write:
        print(table())
        return
    text = README.read_text()
    pattern = re.compile(re.escape(START) + r".*?(" + re.escape(END) + r"|$)", re.S)
    README.write_text(pattern.sub(lambda _: block(), text, count=1))


if __name__ == "__main__":
    main()
