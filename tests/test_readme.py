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


def test_the_variant_table_generator_lists_the_registry(tmp_path):
    # The README's table is generated (`make variants-table`); what is tested is the generator:
    # one row per registered variant, in registry order, and a rewrite that touches only the
    # block between the markers and is idempotent.
    from harness.cross_entropy.variants import REGISTRY

    gen = _variants_table()
    names = [line.split("|")[1].strip(" `") for line in gen.table().splitlines()[2:]]
    assert names == REGISTRY.names()
    assert gen.START in README and gen.END in README and gen.HEADER[0] in README
    copy = tmp_path / "README.md"
    copy.write_text(f"before\n{gen.START}\nstale\n{gen.END}\nafter\n")
    gen.write(copy)
    once = copy.read_text()
    assert once == f"before\n{gen.block()}\nafter\n"
    gen.write(copy)
    assert copy.read_text() == once


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


def test_the_layout_lists_every_module():
    layout = README[README.index("## Layout") :]
    layout = layout[: layout.index("```", layout.index("```") + 3)]
    for package in ("harness", "hydra_plugins"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path.name != "__init__.py" and "__pycache__" not in path.parts:
                assert f"  {path.name} " in layout, f"README Layout misses {path.relative_to(REPO)}"


def test_the_sweep_table_counts_the_points_each_sweep_file_makes():
    # The README's "points" column against the sweep files themselves: the job list the
    # sweeper launches (harness/plan.py) times the points each job walks (the scan lists).
    import re

    from omegaconf import OmegaConf

    from harness.plan import planned_jobs

    table = README[README.index("| sweep | what | points |") :].split("\n\n")[0]
    claimed = {
        m.group(1): int(m.group(2).replace(",", ""))
        for m in re.finditer(r"^\| `(\w+)` \|.*\| ([\d,]+) \|$", table, re.M)
    }
    assert set(claimed) == {p.stem for p in (REPO / "conf" / "sweep").glob("*.yaml")}
    for name, points in claimed.items():
        cfg = OmegaConf.load(REPO / "conf" / "sweep" / f"{name}.yaml")
        params = OmegaConf.to_container(cfg.hydra.sweeper.params) if "hydra" in cfg else {}
        jobs = len(planned_jobs(params, []))
        scan = cfg.get("scan") or {}
        per_job = max(1, len(scan.get("logit_scale") or [])) * max(1, len(scan.get("seed") or []))
        assert jobs * per_job == points, f"{name}: README says {points}, the file makes {jobs * per_job}"
