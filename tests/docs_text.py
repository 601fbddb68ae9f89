"""The project's prose, for the tests that hold it to the code: README.md, what a newcomer reads
first, and the pages of docs/ it points to, which hold the reference, the numerics and the
measured figures. A test of something that must be documented somewhere reads `everything()`;
a test of a table or a usage text reads the page that holds it, so that a copy elsewhere cannot
make it pass."""

from __future__ import annotations

from .conftest import REPO

DOCS = REPO / "docs"


def readme() -> str:
    return (REPO / "README.md").read_text()


def page(name: str) -> str:
    """docs/NAME's text."""
    return (DOCS / name).read_text()


def everything() -> str:
    """README.md and every page of docs/, one after another."""
    return "\n\n".join([readme(), *(p.read_text() for p in sorted(DOCS.glob("*.md")))])
