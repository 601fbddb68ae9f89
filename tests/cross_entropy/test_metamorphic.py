"""The metamorphic call (harness/cross_entropy/metamorphic.py): the classes permuted and the
logits shifted, judged against their own float64 reference. A correct variant is as accurate
there; a bug that depends on a class's place or on the logits' level is flagged there even
where the drawn inputs pass it."""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from harness.cross_entropy import FAMILY, make_inputs
from harness.cross_entropy.metamorphic import permutation, shift, transformed
from harness.cross_entropy.point import Point

from ..conftest import job_config, run_job


def clamped_at_six(logits, targets):
    """Logits clamped to +-6 "for stability": right for logits N(0, 1), wrong once they are shifted."""
    return F.cross_entropy(logits.clamp(-6, 6), targets)


def first_class_gradient_halved(logits, targets):
    """A bug at class 0 only (a tile's first lane): invisible when class 0 holds no probability."""
    z = logits.detach().requires_grad_()
    with torch.enable_grad():
        loss = F.cross_entropy(z, targets)
    return _Halved.apply(logits, loss.detach(), z, loss)


class _Halved(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, value, z, loss):  # noqa: ANN001
        ctx.z, ctx.loss = z, loss
        return value

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001
        (g,) = torch.autograd.grad(ctx.loss, ctx.z, grad_out)
        g = g.clone()
        g[:, 0] *= 0.5
        return g, None, None, None


for _fn in (clamped_at_six, first_class_gradient_halved):
    _fn.harness_targets = {"hard"}


def _rows(**settings) -> pd.DataFrame:
    cfg = job_config(**{"batch_size": 32, "num_classes": 100, "targets": "hard", **settings})
    rows = pd.DataFrame(run_job(cfg))
    return rows[rows["mode"] == "fwd_bwd"].set_index("variant")


def test_a_clamp_the_drawn_logits_never_reach_is_flagged_on_the_shifted_ones():
    name = "clamped_at_six@tests.cross_entropy.test_metamorphic:clamped_at_six"
    rows = _rows(dtype="fp32", variants=[name, "torch_cross_entropy", "chunked"])
    bug = rows.loc["clamped_at_six"]
    assert bug["grad_rel_err"] < 1e-6  # the drawn logits, |z| < 6: the clamp does nothing
    assert bug["status"] == "inaccurate" and bug["message"].startswith("inaccurate with the classes permuted")
    assert bug["meta_loss_rel_err"] > 1000 * rows.loc["chunked", "meta_loss_rel_err"]
    for good in ("torch_cross_entropy", "chunked"):
        assert rows.loc[good, "status"] == "ok" and rows.loc[good, "meta_grad_rel_err"] < 1e-6


def test_a_bug_at_one_class_index_is_flagged_by_the_permutation():
    """Class 0 is never anyone's target at this seed; the permutation moves a target there."""
    name = "first_class_gradient_halved@tests.cross_entropy.test_metamorphic:first_class_gradient_halved"
    rows = _rows(dtype="fp32", logit_scale=0.01, variants=[name, "torch_cross_entropy"])
    assert rows.loc["first_class_gradient_halved", "status"] == "inaccurate"
    assert rows.loc["torch_cross_entropy", "status"] == "ok"


def test_the_transformed_inputs_are_the_same_problem():
    point = Point(8, 50, "fp64", 1.0, "cpu", "hard", seed=3, ignore_index=7, ignore_fraction=0.25)
    inputs = make_inputs(point)
    moved, what = transformed(point, inputs)
    perm = permutation(point)
    assert sorted(perm.tolist()) == list(range(50)) and perm[7] == 7  # the ignored label stays
    assert torch.equal(moved.logits, inputs.logits[:, perm] + shift(inputs.logits))  # fp64: exact
    # each row's target moved with its class, the ignored ones kept
    kept = inputs.targets != 7
    assert torch.equal(perm[moved.targets[kept]], inputs.targets[kept])
    assert torch.equal(moved.targets[~kept], inputs.targets[~kept])
    ref, _ = FAMILY.references(point, inputs)
    _, (moved_ref, _), _ = FAMILY.metamorphic(point, inputs)
    assert abs(moved_ref.loss - ref.loss) <= 1e-13 * abs(ref.loss)
    assert torch.allclose(moved_ref.grad, ref.grad[:, perm], rtol=0, atol=1e-15)
    assert "permuted" in what and shift(inputs.logits) == 4.0  # |z| < 4 at scale 1, B x C = 400


def test_a_shift_past_the_dtype_leaves_the_row_as_it_was():
    # fp16 logits near 65504 shifted by 65536: inf, no reference, so no metamorphic verdict
    rows = _rows(dtype="fp16", logit_scale=2e4, variants=["torch_cross_entropy"])
    row = rows.loc["torch_cross_entropy"]
    assert pd.isna(row.get("meta_grad_rel_err")) and "with the classes" not in row["message"]


def test_the_transform_goes_block_by_block_to_the_same_bits(monkeypatch):
    # float64 block by block (never the whole logits at 8 bytes an element, twice): the same
    # bits as the whole-tensor formula, the shift's maximum too (-inf classes among them)
    from harness.loss import errors

    point = Point(9, 40, "bf16", 3.0, "cpu", "hard", seed=2, mask_fraction=0.25)
    inputs = make_inputs(point)
    logits = inputs.logits
    whole = logits[torch.isfinite(logits)].abs().max().item()
    expected = (logits.double()[:, permutation(point)] + 2.0 ** torch.tensor(whole).log2().ceil().item()).to(
        logits.dtype
    )
    monkeypatch.setattr(errors, "_BLOCK_ELEMENTS", 40 * 2)  # two rows a block, a ragged last one
    moved, _ = transformed(point, inputs)
    assert torch.equal(moved.logits, expected)
