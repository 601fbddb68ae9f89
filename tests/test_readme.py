"""Docs that match the code: the README's variant table is the registry's, its key table names
every setting of the schema, and it shows the two commands."""

import dataclasses
import importlib.util
from pathlib import Path

from harness.config import HarnessConfig

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def _variants_table():
    spec = importlib.util.spec_from_file_location("variants_table", REPO / "scripts" / "variants_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variant_table_matches_the_registry():
    assert _variants_table().block() in README, "run: python scripts/variants_table.py --write"


def test_every_setting_is_documented():
    for f in dataclasses.fields(HarnessConfig):
        if dataclasses.is_dataclass(f.type) or f.name in ("timing", "memory"):
            continue
        assert f"`{f.name}`" in README, f.name
    for group in ("timing", "memory"):
        cls = type(getattr(HarnessConfig(), group))
        for f in dataclasses.fields(cls):
            assert f"`{group}.{f.name}`" in README, f"{group}.{f.name}"


def test_the_two_commands_are_shown():
    assert "make run" in README and "make test" in README
