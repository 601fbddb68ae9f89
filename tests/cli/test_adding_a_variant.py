"""Adding a variant, as docs/extending.md's "Adding a variant" says: one function and one decorator in a
module of its own, and nothing else edited.

A temporary module registers one throwaway variant of each kind: plain; breaking at large
scales with its failure mechanisms; wrong on purpose with its closed form; overwriting its
input by design; CUDA-only. Each is then found where its kind belongs: in the default set of a
point it supports, in the measured rows with the status its kind implies, in the theory's
predictions, in the report's styles and failure-boundary figure, in the generated variant table
(docs/settings.md).
"""

from __future__ import annotations

import importlib.util
import subprocess
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from harness import job
from harness.cross_entropy.theory import theory_table, write_theory
from harness.cross_entropy.variants import REGISTRY
from harness.report import figures
from harness.results import write_rows

from ..conftest import REPO, job_config, run_job
from ..cross_entropy.test_variants import assert_closed_form

MODULE = """
import torch
import torch.nn.functional as F

from harness.cross_entropy.variants import register


@register("zz_plain", description="F.cross_entropy again")
def zz_plain(logits, targets):
    return F.cross_entropy(logits, targets)


@register("zz_breaking", targets={"soft"}, breaks_by=("sum_overflow", "prob_underflow"),
          description="exp(z) / sum exp(z) with no shift")
def zz_breaking(logits, targets):
    e = torch.exp(logits)
    return -torch.sum(targets * torch.log(e / e.sum(dim=1, keepdim=True))) / logits.shape[0]


def _twice(logits, targets):
    rows = torch.logsumexp(logits, dim=1) - logits.gather(1, targets[:, None]).squeeze(1)
    return 2 * rows.mean()


@register("zz_wrong", targets={"hard"}, expected_wrong="counts every row twice", closed_form=_twice,
          description="twice the loss")
def zz_wrong(logits, targets):
    return F.cross_entropy(logits, targets) + F.nll_loss(F.log_softmax(logits, dim=1), targets)


@register("zz_in_place", overwrites_input=True, description="writes into its logits after reading them")
def zz_in_place(logits, targets):
    loss = F.cross_entropy(logits, targets)
    with torch.no_grad():
        logits.zero_()
    return loss


@register("zz_cuda_only", devices={"cuda"}, description="a GPU kernel")
def zz_cuda_only(logits, targets):
    return F.cross_entropy(logits, targets)
"""

NAMES = ("zz_plain", "zz_breaking", "zz_wrong", "zz_in_place", "zz_cuda_only")


@pytest.fixture(scope="module")
def throwaway(tmp_path_factory):
    path = tmp_path_factory.mktemp("user") / "throwaway_variants.py"
    path.write_text(textwrap.dedent(MODULE))
    spec = importlib.util.spec_from_file_location("throwaway_variants", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # registering is importing: the decorators did it
    yield {name: REGISTRY[name] for name in NAMES}
    for name in NAMES:
        REGISTRY.remove(name)


def _cfg(**settings) -> object:
    return job_config(**settings)


def test_each_kind_is_in_the_default_set_of_a_point_it_supports(throwaway):
    for targets in ("soft", "hard"):
        cfg = _cfg(targets=targets)
        names = {v.name for v in job.variants(cfg, job.points(cfg))}
        expected = {"zz_plain", "zz_breaking", "zz_in_place"} | ({"zz_wrong"} if targets == "hard" else set())
        assert expected <= names and "zz_cuda_only" not in names, (targets, names)
    # on a CUDA point (resolved without one: the device check is the job's, not the registry's)
    assert "zz_cuda_only" in {v.name for v in REGISTRY.resolve([], "hard", "cuda:0")}


def test_each_kind_is_measured_with_the_status_its_kind_implies(throwaway):
    cfg = _cfg(variants=list(NAMES), scan={"logit_scale": [1.0, 100.0], "seed": []}, dtype="fp16")
    rows = pd.DataFrame(run_job(cfg))
    status = rows.groupby(["variant", "logit_scale"])["status"].agg(set).to_dict()
    assert status["zz_plain", 1.0] == {"ok"} and status["zz_plain", 100.0] == {"ok"}
    assert status["zz_in_place", 1.0] == {"ok"}  # a fresh copy each call: not wrote_input
    assert status["zz_wrong", 1.0] == {"inaccurate"}  # flagged by the verdict
    assert status["zz_breaking", 1.0] == {"ok"} and status["zz_breaking", 100.0] == {"nonfinite"}
    assert status["zz_cuda_only", 1.0] == {"unsupported"}
    assert_closed_form(throwaway["zz_wrong"])  # and it computes exactly what it declares


def test_a_breaking_variant_is_in_the_theory_and_the_boundary_figure(throwaway, tmp_path):
    predicted = theory_table(["fp16"], [50])
    mine = predicted[predicted.variant == "zz_breaking"]
    assert set(mine.mechanism) == {"sum_overflow", "prob_underflow"} and (mine.predicted_scale > 0).all()
    assert not predicted.variant.isin(["zz_plain", "zz_wrong", "zz_in_place"]).any()

    cfg = _cfg(
        variants=["zz_plain", "zz_breaking", "zz_wrong"],
        targets="hard",
        dtype="fp16",
        scan={"logit_scale": [1.0, 10.0, 30.0, 100.0], "seed": []},
    )
    rows = run_job(cfg)
    write_rows(rows, tmp_path / "point", "key")
    stored = write_theory(tmp_path, pd.DataFrame(rows))
    assert stored is not None and "zz_breaking" in stored.read_text()

    ctx = figures.Context.of(tmp_path, pd.DataFrame(rows))
    assert figures.boundary_variants(ctx) == ["zz_breaking"]
    assert (
        ctx.style["zz_wrong"].wrong and not ctx.style["zz_plain"].wrong and not ctx.style["zz_plain"].unstable
    )
    assert not isinstance(figures.boundary(ctx), str)  # drawn, not "no data"


def test_each_kind_is_in_the_generated_readme_table(throwaway):
    spec = importlib.util.spec_from_file_location("variants_table", REPO / "scripts" / "variants_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines = {line.split("|")[1].strip(" `"): line for line in module.table().splitlines()[2:]}
    assert set(NAMES) <= set(lines)
    assert "breaks at large logit scales** (sum_overflow, prob_underflow)" in lines["zz_breaking"]
    assert "wrong on purpose:** counts every row twice" in lines["zz_wrong"]
    assert "overwrites its input by design" in lines["zz_in_place"]
    assert "| cuda |" in lines["zz_cuda_only"]


def test_no_other_file_names_them():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    here = Path(__file__).resolve().relative_to(REPO).as_posix()
    for name in tracked.split():
        path = REPO / name
        if name == here or not path.is_file() or path.suffix not in {".py", ".yaml", ".md", ".toml", ""}:
            continue
        text = path.read_text(errors="ignore")
        assert not any(n in text for n in NAMES), f"{name} names a throwaway variant"


def test_a_registration_that_contradicts_itself_is_refused():
    from harness.registry import Registry

    reg = Registry("cross_entropy", "two arguments", {"sum_overflow": "..."})
    with pytest.raises(ValueError, match="unknown failure mechanism 'overflow'"):
        reg.register("a", breaks_by=("overflow",))(lambda z, t: z.sum())
    with pytest.raises(ValueError, match="closed_form"):
        reg.register("b", expected_wrong="why")(lambda z, t: z.sum())
