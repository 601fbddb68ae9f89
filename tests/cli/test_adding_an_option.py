"""Adding a loss option, as docs/extending.md's "Adding a loss option" says: four files.

A scratch copy of the package gets a throwaway option, `loss_scale` (the loss times a factor,
as gradient accumulation's 1/k), in exactly these files and no other:

  harness/loss/declared.py                      its declaration
  harness/cross_entropy/reference.py            what it does to the float64 reference
  harness/cross_entropy/variants/scaled.py      a variant honouring it, and one that gets it wrong
  docs/settings.md                              its row in the options table, the variant table

and the copy is then run as a user would: the new setting's rows are right where the variant
honours it, `inaccurate` where the gradient was left unscaled (the reference really carries the
option), `unsupported` from the variants that do not take it; a bad value and the setting on a
family that does not read it are refused with one line; the docs tests pass on the copy.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from ..conftest import REPO

COPIED = ("harness", "conf", "hydra_plugins", "docs", "scripts", "tests", "pyproject.toml", "README.md")

DECLARATION = """
OPTIONS += (
    Option(
        "loss_scale",
        1.0,
        float,
        "float64",
        lambda v, ctx: number(v, "loss_scale", 0, float("inf"), False),
        {CE: "loss_scale"},
        "the loss times this factor (gradient accumulation's 1/k)",
        "the loss and its gradient times the factor",
        kwarg_doc="the loss times this factor",
        on=lambda v: v != 1.0,
    ),
)
"""

REFERENCE = """

_unscaled = reference


def reference(logits, targets, kind, options=None, **how):
    ref = _unscaled(logits, targets, kind, options, **how)
    s = 1.0 if options is None else options.value("loss_scale")
    if s == 1.0 or not ref.finite:
        return ref
    return ref.scaled(s)
"""

VARIANTS = """
import torch.nn.functional as F

from harness.cross_entropy.variants import register


@register("scaled_ce", options={"loss_scale"}, description="F.cross_entropy times loss_scale")
def scaled_ce(logits, targets, *, loss_scale=1.0):
    return F.cross_entropy(logits, targets) * loss_scale


@register("scaled_loss_only", options={"loss_scale"}, description="the loss scaled, its gradient not")
def scaled_loss_only(logits, targets, *, loss_scale=1.0):
    loss = F.cross_entropy(logits, targets)
    return loss + (loss * (loss_scale - 1.0)).detach()
"""

DOC_ROW = "| `loss_scale` | > 0, default 1 | the loss times this factor (gradient accumulation's 1/k) |\n"


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in ("__pycache__", ".pytest_cache") or n.endswith(".egg-info")}


def _add_the_option(copy: Path) -> None:
    declared = copy / "harness/loss/declared.py"
    text = declared.read_text()
    at = text.index("BY_NAME = {")
    declared.write_text(text[:at] + DECLARATION.lstrip() + "\n" + text[at:])

    reference = copy / "harness/cross_entropy/reference.py"
    text = reference.read_text()
    reference.write_text(text + REFERENCE)

    (copy / "harness/cross_entropy/variants/scaled.py").write_text(textwrap.dedent(VARIANTS).lstrip())

    settings = copy / "docs/settings.md"
    text = settings.read_text()
    at = text.index("| `logits` | `normal`, `zipf` |")
    settings.write_text(text[:at] + DOC_ROW + text[at:])
    python(copy, "scripts/variants_table.py", "--write")


def python(copy: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, *args], cwd=copy, capture_output=True, text=True, timeout=600, env=env
    )
    return proc


def _changed(copy: Path) -> list[str]:
    """The files of the copy that differ from this checkout's, or are new."""
    out = []
    for path in sorted(copy.rglob("*")):
        rel = path.relative_to(copy)
        if path.is_dir() or {"__pycache__", ".pytest_cache"} & set(rel.parts) or rel.suffix == ".pyc":
            continue
        if not (REPO / rel).exists() or not filecmp.cmp(path, REPO / rel, shallow=False):
            out.append(str(rel))
    return out


def _rows(copy: Path, out: Path, *settings: str) -> pd.DataFrame:
    proc = python(copy, "-m", "harness", *settings, f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return pd.concat([pq.read_table(f).to_pandas() for f in sorted(out.rglob("rows.parquet"))])


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("with_loss_scale")
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=_ignore)
        else:
            shutil.copy2(src, root / name)
    _add_the_option(root)
    return root


def test_the_option_takes_four_files(copy):
    assert _changed(copy) == [
        "docs/settings.md",
        "harness/cross_entropy/reference.py",
        "harness/cross_entropy/variants/scaled.py",
        "harness/loss/declared.py",
    ]


def test_the_option_gives_correct_rows_and_unsupported_ones(copy, tmp_path):
    common = ["num_classes=40", "batch_size=8", "targets=hard", "timing.enabled=false"]
    variants = "variants=[scaled_ce,scaled_loss_only,torch_cross_entropy]"
    rows = _rows(copy, tmp_path / "on", *common, "loss_scale=2.5", variants).set_index(["variant", "mode"])
    assert (rows.loss_scale == 2.5).all() and (rows.family == "cross_entropy").all()

    assert (rows.loc["scaled_ce", "status"] == "ok").all(), rows.loc["scaled_ce", "message"]
    # the loss is right, the gradient 1/2.5 of the truth: a relative error of exactly 1 - 1/2.5
    wrong = rows.loc[("scaled_loss_only", "fwd_bwd")]
    assert wrong.status == "inaccurate" and wrong.grad_rel_err == pytest.approx(0.6, rel=1e-5)
    assert rows.loc[("scaled_loss_only", "fwd"), "status"] == "ok"
    plain = rows.loc["torch_cross_entropy"]
    assert (plain.status == "unsupported").all()
    assert plain.message.str.contains("does not take loss_scale").all()

    # the loss the reference computes is 2.5 times the plain one's (same seed, same inputs)
    off = _rows(copy, tmp_path / "off", *common, "variants=[scaled_ce,torch_cross_entropy]")
    off = off.set_index(["variant", "mode"])
    assert (off.status == "ok").all() and (off.loss_scale == 1.0).all()
    scaled = rows.loc[("scaled_ce", "fwd"), "loss"]
    assert scaled == pytest.approx(2.5 * off.loc[("torch_cross_entropy", "fwd"), "loss"], rel=1e-5)


def test_the_option_is_refused_with_one_line(copy, tmp_path):
    for settings, words in [
        (["loss_scale=-1"], "harness: loss_scale=-1.0 is not allowed: use a finite number >= 0"),
        (
            ["family=linear_cross_entropy", "loss_scale=2"],
            "harness: loss_scale=2.0 is not read by family=linear_cross_entropy",
        ),
    ]:
        proc = python(copy, "-m", "harness", *settings, f"hydra.run.dir={tmp_path / 'run'}")
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1].startswith(words), proc.stderr[-500:]


def test_the_docs_tests_pass_on_the_copy(copy):
    proc = python(copy, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/cli/test_readme.py")
    assert proc.returncode == 0, proc.stdout[-3000:]
