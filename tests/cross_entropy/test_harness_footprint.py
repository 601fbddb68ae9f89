"""What judging a result costs the harness: block-by-block errors and finiteness checks that agree
with the whole-tensor formulas they replace, a total-error reference without the conditioning
nobody reads, a draw made again block by block bit for bit, references that stream their
gradient instead of holding it, and the bytes the harness holds, as the rows say."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from harness.cross_entropy import FAMILY, loss_options
from harness.cross_entropy.accuracy import grad_rel_err, row_scale
from harness.cross_entropy.inputs import make_inputs
from harness.cross_entropy.point import Point
from harness.cross_entropy.reference import reference
from harness.loss import errors
from harness.loss.errors import nonfinite_counts, norm_rel_err, upstream
from harness.loss.options import LossOptions

from ..conftest import python_c

# 7 rows of 13: blocks of one row when the block is shrunk to 16 elements (a ragged last one too)
X = torch.randn(7, 13, generator=torch.Generator().manual_seed(0))
REF = X.double() + 1e-3 * torch.randn(7, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(params=[1 << 22, 16, 40], ids=["one block", "a row a block", "ragged blocks"])
def block(request, monkeypatch):
    monkeypatch.setattr(errors, "_BLOCK_ELEMENTS", request.param)


def test_the_blockwise_error_is_the_whole_norm(block):
    whole = (X.double() - REF).norm().item() / REF.norm().item()
    assert norm_rel_err(X, REF, REF.norm().item()) == pytest.approx(whole, rel=1e-14)
    s = upstream(7, REF)
    scaled = REF * s[:, None]
    whole = (X.double() - scaled).norm().item() / scaled.norm().item()
    assert norm_rel_err(X, REF, math.nan, s) == pytest.approx(whole, rel=1e-14)
    # an absolute error against a zero reference
    assert norm_rel_err(X, torch.zeros_like(REF), 0.0) == pytest.approx(X.double().norm().item(), rel=1e-14)


def test_nonfinite_counts_count_every_kind(block):
    t = X.clone()
    assert nonfinite_counts(t) == (0, 0)
    t[0, 0], t[3, 4], t[6, 12] = math.nan, math.inf, -math.inf  # inf + -inf: the sum is NaN
    assert nonfinite_counts(t) == (1, 2)
    assert nonfinite_counts(torch.tensor(math.inf)) == (0, 1)
    # finite float64 values whose sum overflows: counted in full, and none found
    assert nonfinite_counts(torch.full((7, 13), 1e308, dtype=torch.float64)) == (0, 0)
    assert nonfinite_counts(torch.arange(5)) == (0, 0)


def test_the_finite_check_holds_no_float64_copy():
    # t.sum(dtype=torch.float64) on a CPU copies t whole to float64 inside the kernel (no
    # tracker of tensors sees it; the process's peak does): 4x a bf16 gradient, the largest
    # thing a point allocated. Block by block, the check holds a block's copy (2 MiB; the
    # process's peak moves by up to 68 MiB more, measured, as the heap and the pool settle).
    grew = python_c(
        "import resource, torch\n"
        "from harness.loss.errors import nonfinite_counts\n"
        "t = torch.ones(1024, 1 << 16, dtype=torch.bfloat16)  # 128 MiB; 512 MiB in float64\n"
        "nonfinite_counts(t[:8])  # the kernels' code and the thread pool, paged in once\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "assert nonfinite_counts(t) == (0, 0)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)\n"
    )
    assert int(grew) < 128 << 20, int(grew) / 2**20  # the copy: 512 MiB


@pytest.mark.parametrize(
    "kind,options",
    [
        ("soft", LossOptions()),
        ("hard", LossOptions(label_smoothing=0.1, z_loss=1e-3, softcap=5.0)),
        ("hard", LossOptions(reduction="none")),
    ],
)
def test_the_total_errors_reference_skips_only_the_conditioning(kind, options):
    point = Point(6, 50, "bf16", 3.0, "cpu", kind, seed=0)
    z64, t64 = make_inputs(point).draw.whole()
    targets = make_inputs(point).targets if kind == "hard" else t64
    full = reference(z64, targets, kind, options)
    bare = reference(z64, targets, kind, options, conditioning=False)
    assert bare.loss == full.loss and torch.equal(bare.grad, full.grad)
    assert torch.equal(bare.losses, full.losses)
    assert math.isnan(bare.loss_magnitude) and math.isnan(bare.grad_magnitude)
    assert math.isfinite(full.loss_magnitude) and math.isfinite(full.grad_magnitude)


# Points whose draw spans several blocks when the block is shrunk to 64 elements: rows of 50
# (one row a block), of 20 (three rows a block, a ragged last one), zipf's ranks and softmax
# targets drawn per block too.
SPANNING = [
    Point(7, 50, "bf16", 3.0, "cpu", "soft", seed=1),
    Point(7, 20, "fp16", 2.0, "cpu", "hard", seed=2, label_smoothing=0.1, ignore_fraction=0.3),
    Point(9, 20, "fp32", 1.0, "cpu", "hard", seed=3, logits="zipf", softcap=4.0, z_loss=1e-3),
    Point(9, 20, "fp32", 4.0, "cpu", "hard", seed=0, class_weights="seeded", reduction="none"),
]


# The modules, not the package's functions of the same names.
inputs_module = importlib.import_module("harness.cross_entropy.inputs")
reference_module = importlib.import_module("harness.cross_entropy.reference")


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(inputs_module, "_BLOCK_ELEMENTS", 64)
    monkeypatch.setattr(importlib.import_module("harness.cross_entropy.streamed"), "_BLOCK_ELEMENTS", 64)
    monkeypatch.setattr(reference_module, "_HOLD_BELOW_BYTES", 0)  # stream, however small


@pytest.mark.parametrize("point", SPANNING, ids=lambda p: p.label())
def test_the_draw_is_made_again_bit_for_bit_and_rounds_to_the_inputs(point, small_blocks):
    inputs = make_inputs(point)
    z64, t64 = inputs.draw.whole()
    again, t_again = inputs.draw.whole()
    assert torch.equal(z64, again) and (t64 is None or torch.equal(t64, t_again))
    assert len(list(inputs.draw.blocks())) > 1  # the premise: several blocks
    assert torch.equal(inputs.logits, z64.to(point.torch_dtype))
    if point.targets == "soft":
        assert torch.equal(inputs.targets, t64.to(point.torch_dtype))
    assert torch.equal(make_inputs(point).targets, inputs.targets)


@pytest.mark.parametrize("point", SPANNING, ids=lambda p: p.label())
def test_streamed_references_are_the_whole_tensor_ones(point, small_blocks):
    # The family's references walk the draw; the same problem given as whole tensors walks
    # them by slices: the same blocks, so the same bits.
    inputs = make_inputs(point)
    ref, total = FAMILY.references(point, inputs)
    z64, t64 = inputs.draw.whole()
    options = loss_options(point, inputs)
    targets = inputs.targets
    held = reference(inputs.logits, targets, point.targets, options)
    held_total = reference(z64, targets if point.targets == "hard" else t64, point.targets, options, False)
    for streamed, whole in ((ref, held), (total, held_total)):
        assert streamed.loss == whole.loss and torch.equal(streamed.losses, whole.losses)
        assert torch.equal(streamed.grad, whole.grad)
        assert streamed.grad_norm == whole.grad_norm
    for name in ("loss_magnitude", "grad_log_p", "grad_magnitude", "grad_subnormal"):
        assert getattr(ref, name) == getattr(held, name)
    # Nothing of [B, C] size is held: the per-row losses and what the gradient reads.
    b, c = point.batch_size, point.num_classes
    assert all(t.numel() < b * c for r in (ref, total) for t in r.held())


@pytest.mark.parametrize("point", SPANNING, ids=lambda p: p.label())
def test_the_total_reference_made_while_the_inputs_fill_is_the_one_made_after(point, small_blocks):
    # The family's make_inputs makes the unrounded draw's reference on the walk that fills the
    # rounded tensors (one draw fewer); the plain make_inputs leaves it to a walk of its own.
    fused, plain = FAMILY.make_inputs(point), make_inputs(point)
    assert plain.total is None
    assert torch.equal(fused.logits, plain.logits) and torch.equal(fused.targets, plain.targets)
    (_, total), (_, after) = FAMILY.references(point, fused), FAMILY.references(point, plain)
    if point.logits == "zipf":  # targets drawn from the logits: no walk precedes them
        assert fused.total is None
    else:
        assert total is fused.total[1]
    assert total.loss == after.loss and torch.equal(total.losses, after.losses)
    assert torch.equal(total.grad, after.grad) and total.grad_norm == after.grad_norm


def test_a_restore_remakes_the_inputs_without_the_reference(small_blocks):
    point = SPANNING[1]
    again, first = FAMILY.remake_inputs(point), FAMILY.make_inputs(point)
    assert again.total is None and first.total is not None
    assert torch.equal(again.logits, first.logits) and torch.equal(again.targets, first.targets)


def test_a_walk_read_in_part_still_fills_the_inputs(small_blocks):
    point = SPANNING[0]
    seen = []

    def first_block_only(inputs, walk):
        seen.append(next(iter(walk()))[0])
        return "partial"

    inputs = make_inputs(point, first_block_only)
    assert inputs.total == "partial" and seen == [slice(0, 1)]
    assert torch.equal(inputs.logits, make_inputs(point).logits)
    assert torch.equal(inputs.targets, make_inputs(point).targets)


@pytest.mark.parametrize("point", SPANNING, ids=lambda p: p.label())
def test_one_walk_gives_both_gradient_errors(point, small_blocks):
    inputs = make_inputs(point)
    refs = FAMILY.references(point, inputs)
    variant = FAMILY.registry["torch_cross_entropy"]
    if FAMILY.unsupported(variant, point):
        variant = FAMILY.registry["chunked"]
    outputs = FAMILY.call(variant.fn, FAMILY.feed(inputs, variant, point), "fwd_bwd")()
    cols = FAMILY.assess(outputs, refs, point)
    scale = row_scale(refs[0], outputs[0].dim())
    assert cols["grad_rel_err"] == grad_rel_err(outputs[1], refs[0], scale)
    assert cols["grad_rel_err_total"] == grad_rel_err(outputs[1], refs[1], scale)
    assert 0 < cols["grad_rel_err"] < cols["grad_tolerance"]


def test_per_row_losses_are_judged_against_the_scaled_reference():
    point = Point(8, 40, "fp32", 2.0, "cpu", "hard", seed=0, reduction="none")
    inputs = make_inputs(point)
    ref = reference(inputs.logits, inputs.targets, "hard", LossOptions(reduction="none"))
    s = row_scale(ref, loss_dims=1)
    assert torch.equal(s, upstream(8, ref.grad))
    assert row_scale(ref, loss_dims=0, scalar=1.0) is None
    assert torch.equal(row_scale(ref, loss_dims=0), torch.full((8,), 2.0, dtype=torch.float64))
    exact = ref.grad * s[:, None]
    assert grad_rel_err(exact.float(), ref, s) < 1e-7
    assert grad_rel_err(ref.grad.float(), ref, s) > 0.1  # unscaled: the bug of a sum before the scale


@pytest.mark.parametrize("dtype,size", [("fp32", 4), ("bf16", 2)])
def test_the_rows_say_what_the_harness_held(dtype, size):
    # 64 x 4096 logits (>= 1 MiB in fp32: fingerprinted, not copied). What the harness holds while
    # a variant runs: the logits and hard targets, two float64 references (per-row losses, the
    # rows kept, a bool a row, and the gradient, 2 MiB: held below 16 MiB, streamed above; the
    # rounded inputs' also the per-entry bound beside it, and the targets' entries), the
    # guard's row and column sums of the logits and its copy of the targets; no float64 draw.
    from types import SimpleNamespace

    from harness.cross_entropy.variants import REGISTRY
    from harness.measure import isolation
    from harness.runner import run_point

    b, c = 64, 4096
    off = SimpleNamespace(enabled=False)
    rows = run_point(
        Point(b, c, dtype, 1.0, "cpu", "hard", seed=0), [REGISTRY["torch_cross_entropy"]], off, off, {}
    )
    fingerprint = 8 * (b + c) if size * b * c >= isolation.COPY_BELOW_BYTES else size * b * c
    model = size * b * c + 8 * b + 2 * (8 * b + b + 8 * b * c) + fingerprint + 8 * b
    model += 8 * b * c + 8 * b  # the verdict's reference: per-entry bound, targets' entries
    assert [r["harness_bytes"] for r in rows] == [model, model]


# Points around the guard's copy threshold, with soft targets, weights and fp64 (one reference),
# and the (N, C, d) layout.
MODELLED = [
    Point(64, 4096, "fp32", 1.0, "cpu", "hard", seed=0),
    Point(16, 1000, "bf16", 1.0, "cpu", "soft", seed=0),
    Point(64, 4096, "bf16", 1.0, "cpu", "soft", seed=0, class_weights="seeded"),
    Point(8, 300, "fp64", 2.0, "cpu", "hard", seed=0, ignore_fraction=0.25),
    Point(32, 20000, "fp16", 1.0, "cpu", "hard", seed=0, class_weights="seeded", label_smoothing=0.1),
    Point(64, 4096, "fp32", 1.0, "cpu", "hard", seed=0, spatial_size=16),  # the logits twice
]


@pytest.mark.parametrize("point", MODELLED, ids=lambda p: p.label())
def test_the_byte_model_of_the_harness_is_what_the_rows_say(point):
    from types import SimpleNamespace

    from harness.cross_entropy.footprint import resident_bytes
    from harness.runner import run_point

    off = SimpleNamespace(enabled=False)
    variant = FAMILY.registry["chunked"]
    rows = run_point(point, [variant], off, off, {})
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert [r["harness_bytes"] for r in rows] == [resident_bytes(point)] * 2


# Draw blocks of 2^22 elements and reference blocks of 2^20, several of each: B x C = 5.2e6.
@pytest.mark.parametrize(
    "point",
    [
        Point(160, 32768, "fp32", 1.0, "cpu", "hard", seed=0),
        Point(160, 32768, "bf16", 1.0, "cpu", "soft", seed=0),
        Point(160, 8192, "fp32", 1.0, "cpu", "hard", seed=0, spatial_size=8),  # + L: the gradient in rows
        Point(
            160,
            32768,
            "fp32",
            1.0,
            "cpu",
            "hard",
            seed=0,
            label_smoothing=0.1,
            z_loss=1e-4,
            softcap=30.0,
            class_weights="seeded",
            ignore_fraction=0.1,
        ),  # fmt: skip
    ],
    ids=lambda p: p.label(),
)
def test_the_harness_adds_no_more_than_its_transient_model(point, monkeypatch):
    # What the harness allocates beyond what it keeps, while it draws the inputs, makes the
    # references and compares a result: block temporaries only, within the model and not far
    # below it (a model that is only an upper bound would not say what a GPU point needs).
    from harness.cross_entropy.footprint import transient_bytes
    from harness.measure.memory import LiveStorageTracker

    b, c = point.batch_size, point.num_classes
    held = b * c * point.torch_dtype.itemsize * (2 if point.targets == "soft" else 1)
    # One thread: the draw in the caller's, which the tracker follows (a dispatch mode sees its
    # own thread's ops). The blocks a second thread makes ahead are the model's ahead term,
    # one block a stream at most (tests/loss/test_ahead.py).
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    with LiveStorageTracker() as drawing:
        inputs = make_inputs(point)
    with LiveStorageTracker() as referencing:
        refs = FAMILY.references(point, inputs)
    variant = FAMILY.registry["chunked"]
    outputs = FAMILY.call(variant.fn, FAMILY.feed(inputs, variant, point), "fwd_bwd")()
    with LiveStorageTracker() as judging:
        FAMILY.assess(outputs, refs, point)
    measured = max(drawing.peak - held, referencing.peak, judging.peak)
    model = transient_bytes(point, threads=1)
    if b * c > 1 << 22:  # several blocks, made ahead with two threads: 1 or 3 more of float64
        per_block = min(b, (1 << 22) // c) * c * 8
        extra = per_block * (3 if point.targets == "soft" else 1)
        assert transient_bytes(point, threads=2) == model + extra
    else:
        assert transient_bytes(point, threads=2) == model
    assert 0.4 * model < measured <= model, (measured / 2**20, model / 2**20)
    # What it buys: at the largest GPU point, a sliver of the float64 gradient it replaced.
    big = Point(8192, 262144, "fp32", 1.0, "cpu", "soft", seed=0)
    assert transient_bytes(big) < 0.02 * 8 * 8192 * 262144


@pytest.mark.parametrize("point", SPANNING, ids=lambda p: p.label())
def test_a_kept_gradient_gives_the_streamed_errors(point, monkeypatch):
    # Small points keep their reference gradients (a recompute per row cost more than holding
    # them); the errors are those of the streamed ones, to the blocks' rounding.
    def columns(hold: int) -> dict:
        monkeypatch.setattr(reference_module, "_HOLD_BELOW_BYTES", hold)
        inputs = make_inputs(point)
        refs = FAMILY.references(point, inputs)
        assert (refs[0].gradient.kept is not None) == (hold > 0)
        variant = FAMILY.registry["chunked"]
        outputs = FAMILY.call(variant.fn, FAMILY.feed(inputs, variant, point), "fwd_bwd")()
        return FAMILY.assess(outputs, refs, point)

    kept, streamed = columns(1 << 24), columns(0)
    for name in ("grad_rel_err", "grad_rel_err_total", "loss_rel_err", "grad_tolerance"):
        assert kept[name] == pytest.approx(streamed[name], rel=1e-12), name


def test_the_docs_say_which_gpu_shapes_fit_as_the_model_does():
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("footprint_table", REPO / "scripts/footprint_table.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    table = script.table()
    assert table in (REPO / "README.md").read_text()
    assert table in (REPO / "docs/operations.md").read_text()
    # The fp32 C = 262144 soft point (8 GiB of logits, 8 of targets) fits an 80 GB card now;
    # a 40 GB one still cannot take naive_exp's 6 L beside it.
    big = script._point(262144, "fp32", "soft")
    assert script.smallest_card(big, script.WORST_PEAK) == "80 GB"


def test_gpu_walks_take_blocks_16x_the_cpus_and_the_model_counts_them():
    # On a GPU each block's operations are kernel launches: the CPU's blocks left an H200 point
    # launch-bound (past 240 s). The reference's GPU blocks are the draw's own, 2^22 elements.
    import dataclasses

    from harness.cross_entropy.footprint import REFERENCE_TEMPORARIES, transient_bytes
    from harness.cross_entropy.streamed import Rows

    assert errors.block_elements(1 << 20, "cuda:0") == 16 << 20
    assert errors.block_elements(1 << 20, "cpu") == 1 << 20
    on_gpu = Rows((8192, 262144), torch.float64, torch.device("cuda"), lambda: iter(()))
    assert on_gpu.block_elements == 1 << 22 == inputs_module._BLOCK_ELEMENTS
    cpu = Point(8192, 262144, "fp32", 1.0, "cpu", "soft", seed=0)
    gpu = dataclasses.replace(cpu, device="cuda")
    # the reference's float64 temporaries of a 2^22-element block against 2^18-element ones
    grown = transient_bytes(gpu) - transient_bytes(cpu, threads=1)  # one thread: no draw made ahead
    assert grown == 8 * REFERENCE_TEMPORARIES * ((1 << 22) - (1 << 18)), grown


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_a_point_walks_its_draw_once_more_per_judged_gradient(kind, small_blocks, monkeypatch):
    # Each walk of a large draw makes every normal again (1.2 s a walk at B x C = 2^26 on a CPU
    # core, twice that with soft targets): one walk fills the inputs and makes the total
    # reference, and each gradient judged against the total walks it once more. The native op's
    # untimed call, which only err_vs_native reads, walks none: its total columns are not made.
    from types import SimpleNamespace

    from harness.cross_entropy.inputs import Draw
    from harness.cross_entropy.variants import REGISTRY
    from harness.loss.errors import Entrywise
    from harness.runner import run_point

    walks, judged = [], []
    blocks, add = Draw.blocks, Entrywise.add
    monkeypatch.setattr(Draw, "blocks", lambda self: walks.append(1) or blocks(self))
    # one element-wise accumulator per gradient judged element-wise (kept alive: ids are reused)
    monkeypatch.setattr(
        Entrywise, "add", lambda self, *a: (self in judged or judged.append(self), add(self, *a))
    )
    off = SimpleNamespace(enabled=False)
    point = Point(7, 50, "fp32", 2.0, "cpu", kind, seed=1)
    rows = run_point(point, [REGISTRY["chunked"]], off, off, {})
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert rows[1]["grad_rel_err_total"] is not None and rows[1]["err_vs_native"] is not None
    assert len(walks) == 2  # the fill, and chunked's fwd_bwd gradient
    assert rows[1]["grad_entry_ratio"] is not None
    chunked_judged = len(judged)
    walks.clear()
    judged.clear()
    native = run_point(point, [REGISTRY["torch_cross_entropy"]], off, off, {})[1]
    assert len(walks) == 2
    # the gradients of a variant's own calls alone (its row, the second backward, the metamorphic
    # call): the native op's untimed call is not judged element-wise either
    assert len(judged) == chunked_judged
    # the native op's own row gives the same ratio the untimed call did
    assert rows[1]["grad_err_vs_native"] == pytest.approx(
        max(rows[1]["grad_rel_err"], 2**-24) / max(native["grad_rel_err"], 2**-24), rel=1e-12
    )


def test_the_point_cost_script_prints_a_points_time_and_peak():
    # scripts/point_cost.py measures the footprint's figures (docs/operations.md): a tiny point
    # here, its line and its median; a bad setting is one line naming it, not a traceback.
    import subprocess
    import sys

    from tests.conftest import REPO

    script = str(REPO / "scripts/point_cost.py")
    run = subprocess.run(
        [sys.executable, script, "--runs", "1", "batch_size=8", "num_classes=50"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    first, median = run.stdout.strip().splitlines()
    assert first.endswith(", ok") and " s a point, peak RSS " in first
    assert median.startswith("median ") and "GB" in median
    # --floor: the inputs and one call of each variant, no reference, guard or judgement
    floor = subprocess.run(
        [sys.executable, script, "--runs", "1", "--floor", "batch_size=8", "num_classes=50"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert floor.returncode == 0, floor.stderr[-2000:]
    assert floor.stdout.strip().splitlines()[0].endswith(", called")
    bad = subprocess.run(
        [sys.executable, script, "--runs", "1", "dtype=fp99"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0
    assert bad.stderr.startswith("point_cost: the point failed: dtype='fp99' is not allowed")
