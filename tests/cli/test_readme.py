"""Docs that match the code: the variant table (docs/settings.md) is the registry's, every
setting of the schema is documented, the README shows the two commands, the layout
(docs/extending.md) names every package and module, and the sweep table counts what the sweep
files make."""

import dataclasses
import importlib.util

from harness.config import HarnessConfig

from ..docs_text import REPO, everything, page, readme


def _variants_table():
    spec = importlib.util.spec_from_file_location("variants_table", REPO / "scripts" / "variants_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_variant_table_generator_lists_the_registry(tmp_path):
    # The table is generated (`make variants-table`); what is tested is the generator: one row
    # per registered variant, in registry order, and a rewrite that touches only the block
    # between the markers and is idempotent.
    from harness.cross_entropy.variants import REGISTRY

    gen = _variants_table()
    names = [line.split("|")[1].strip(" `") for line in gen.table().splitlines()[2:]]
    assert names == REGISTRY.names()
    text = gen.DOC.read_text()
    assert gen.START in text and gen.END in text and gen.HEADER[0] in text
    assert gen.DOC == REPO / "docs" / "settings.md"
    copy = tmp_path / "page.md"
    copy.write_text(f"before\n{gen.START}\nstale\n{gen.END}\nafter\n")
    gen.write(copy)
    once = copy.read_text()
    assert once == f"before\n{gen.block()}\nafter\n"
    gen.write(copy)
    assert copy.read_text() == once


def test_every_setting_is_documented():
    docs = everything()
    for f in dataclasses.fields(HarnessConfig):
        if dataclasses.is_dataclass(f.type) or f.name in ("timing", "memory"):
            continue
        assert f"`{f.name}`" in docs, f.name
    for group in ("timing", "memory"):
        cls = type(getattr(HarnessConfig(), group))
        for f in dataclasses.fields(cls):
            assert f"`{group}.{f.name}`" in docs, f"{group}.{f.name}"


def test_the_two_commands_are_shown():
    # on the README itself, in its first screen: what a newcomer types first
    first_screen = "\n".join(readme().splitlines()[:40])
    assert "make run" in first_screen and "make test" in first_screen


def _layout_paths(text: str) -> set[str]:
    """The paths the layout's code block names, read as a tree: two spaces a level, a name
    ending in "/" a folder; a line indented past the names' column continues a description."""
    block = text[text.index("## Layout") :]
    block = block[block.index("```") + 3 :]
    block = block[block.index("\n") + 1 : block.index("```")]
    paths, folders = set(), []
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        if not line.strip() or indent >= 20:
            continue
        name, depth = line.split()[0], indent // 2
        path = "/".join([*folders[depth - 1 : depth], name.rstrip("/")])  # under its folder
        paths.add(path)
        if name.endswith("/"):
            folders[depth:] = [path]
    return paths


def test_the_layout_lists_every_package_and_module():
    # Every package, and every module but a variant file: a variant is one new file in a
    # `variants/` folder and nothing else (the generated variant table lists it), so the layout
    # names the folder and need not name each file in it.
    listed = _layout_paths(page("extending.md"))
    for package in ("harness", "hydra_plugins"):
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO)
            if "__pycache__" in rel.parts:
                continue
            folder = rel.parent.as_posix()
            assert folder in listed, f"docs/extending.md Layout misses the package {folder}/"
            if path.name == "__init__.py" or rel.parent.name == "variants":
                continue
            assert rel.as_posix() in listed, f"docs/extending.md Layout misses {rel}"


def test_the_sweep_table_counts_the_points_each_sweep_file_makes():
    # The sweep table's "points" column against the sweep files themselves: the job list the
    # sweeper launches (harness/plan.py) times the points each job walks (the scan lists).
    import re

    from omegaconf import OmegaConf

    from harness.plan import planned_jobs

    text = page("settings.md")
    table = text[text.index("| sweep | what | points |") :].split("\n\n")[0]
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
        assert jobs * per_job == points, f"{name}: the docs say {points}, the file makes {jobs * per_job}"


def _anchor(heading: str) -> str:
    """GitHub's id for a heading: lower case, punctuation but "-" and "_" dropped, spaces to "-"."""
    import re

    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_relative_link_points_at_a_file_and_heading():
    # The README's sections moved into docs/: a link left pointing at the old place, or at a
    # heading renamed since, would send a reader nowhere.
    import re

    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    anchors = {
        f.resolve(): {_anchor(h) for h in re.findall(r"^#+ (.+)$", f.read_text(), re.M)} for f in files
    }
    for f in files:
        text = re.sub(r"```.*?```", "", f.read_text(), flags=re.S)  # links in code blocks are not links
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            dest = (f.parent / path).resolve() if path else f.resolve()
            where = f"{f.relative_to(REPO)} -> {target}"
            assert dest.exists(), f"{where}: no such file"
            if anchor:
                assert anchor in anchors.get(dest, set()), f"{where}: no such heading"


def test_the_options_table_lists_every_declared_option():
    # docs/settings.md's options table against harness/loss/declared.py: a new declaration
    # without its row (or a row left behind by a removed one) fails here.
    import re

    from harness.loss.declared import OPTIONS

    text = page("settings.md")
    table = text[text.index("| setting | values | meaning |") :].split("\n\n")[0]
    documented = re.findall(r"^\| `(\w+)` \|", table, re.M)
    assert sorted(documented) == sorted(o.name for o in OPTIONS)
