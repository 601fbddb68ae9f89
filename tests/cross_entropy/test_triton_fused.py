"""triton_fused's kernel against the float64 reference: compiled on a CUDA machine, otherwise
on CPU tensors under Triton's interpreter.

Sizes are small because the interpreter runs each program in Python: C in {7, 100, 300} with
BLOCK 64/128, so no C is a multiple of the block, one row fits in a single masked block (7)
and the others need 2-3 blocks with a ragged tail; B in {1, 3, 5}, so B*C crosses many blocks.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

# First: it chooses Triton's interpreter, which must happen before triton is imported.
from ..triton_interpreter import DEVICE, kernels, rerun_in_a_fresh_process

# isort: split
import pytest  # noqa: E402
import torch  # noqa: E402

from harness.cross_entropy.accuracy import assess  # noqa: E402
from harness.cross_entropy.reference import reference  # noqa: E402
from harness.cross_entropy.tolerance import tolerance  # noqa: E402
from harness.cross_entropy.variants import REGISTRY  # noqa: E402
from harness.dtypes import DTYPES  # noqa: E402
from harness.measure.memory import peak_bytes  # noqa: E402


@pytest.fixture(scope="module")
def ce():
    yield from kernels("test_kernels_in_a_fresh_process")


def test_kernels_in_a_fresh_process():
    rerun_in_a_fresh_process(__file__)


def make_case(b: int, c: int, dtype: torch.dtype, kind: str, seed: int = 0):
    """logits [B, C] = 10 * N(0, 1) in `dtype`, with row 0's target logit put 50 below the
    row's minimum (a large loss, ~ 90); targets hard [B] int64 or soft [B, C] in `dtype`."""
    g = torch.Generator().manual_seed(seed)
    z = 10 * torch.randn(b, c, dtype=torch.float64, generator=g)
    y = torch.randint(c, (b,), generator=g)
    z[0, y[0]] = z[0].min() - 50
    if kind == "hard":
        t = y
    else:
        t = torch.randn(b, c, dtype=torch.float64, generator=g).softmax(dim=1)
        t[0] = 0.1 / (c - 1)
        t[0, y[0]] = 0.9  # most of row 0's mass on its far-below logit
        t = t.to(dtype)
    return z.to(dtype).to(DEVICE), t.to(DEVICE)


def fwd_bwd(fn, z, t):
    x = z.detach().clone().requires_grad_()
    loss = fn(x, t)
    (grad,) = torch.autograd.grad(loss, x)
    return loss, grad


SHAPES = [(1, 7, 64), (3, 100, 64), (5, 300, 128)]


@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("dtype_name", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("b,c,block", SHAPES)
def test_matches_float64_reference(ce, b, c, block, dtype_name, kind):
    z, t = make_case(b, c, DTYPES[dtype_name], kind)
    ref = reference(z, t, kind)
    loss, grad = fwd_bwd(lambda x, tt: ce.cross_entropy(x, tt, block=block), z, t)
    assert loss.dtype == z.dtype and loss.shape == ()
    assert grad.dtype == z.dtype and grad.shape == z.shape
    acc = assess(loss, grad, ref, dtype_name)
    assert acc.status == "ok", (acc, tolerance(ref, dtype_name))
    with torch.no_grad():  # fwd mode: the first pass only, same loss
        assert ce.cross_entropy(z, t, block=block).item() == loss.item()


@pytest.mark.parametrize("dtype_name", ["fp32", "bf16"])
def test_rows_whose_first_blocks_are_all_masked_stay_finite(ce, dtype_name):
    # flash-attention #1930: NaN when most logits are -inf, depending on where the finite ones
    # fall in the blocks. Here the first 200 classes of every row are -inf (three whole blocks of
    # 64), so the running max is -inf for three blocks before the first finite logit.
    z, _ = make_case(3, 300, DTYPES[dtype_name], "hard")
    z[:, :200] = -math.inf
    t = torch.tensor([210, 250, 299], device=z.device)
    ref = reference(z, t, "hard")
    loss, grad = fwd_bwd(lambda x, tt: ce.cross_entropy(x, tt, block=64), z, t)
    acc = assess(loss, grad, ref, dtype_name)
    assert acc.status == "ok", (acc, tolerance(ref, dtype_name))
    assert (grad[:, :200] == 0).all()


def test_large_loss_row_is_large(ce):
    # Guards the test data itself: row 0 must really carry a loss far above a typical row's.
    z, t = make_case(3, 100, torch.float32, "hard")
    per_row = ce.rows(z, t, None, 64)
    assert per_row[0] > 80 and per_row[0] > 3 * per_row[1:].max()


def test_default_block_and_fp64(ce):
    z, t = make_case(3, 300, torch.float64, "soft")  # B = 3: 1/B is not exact in binary
    ref = reference(z, t, "soft")
    loss, grad = fwd_bwd(ce.cross_entropy, z, t)
    assert assess(loss, grad, ref, "fp64").status == "ok"


def test_backward_scales_by_grad_output(ce):
    z, t = make_case(3, 100, torch.float32, "hard")
    x = z.clone().requires_grad_()
    (grad,) = torch.autograd.grad(ce.cross_entropy(x, t, block=64) * -2.5, x)
    ref = reference(z, t, "hard")
    torch.testing.assert_close(grad.double(), -2.5 * ref.grad, rtol=64 * 2**-24, atol=1e-9)


def test_second_backward_is_refused(ce):
    z, t = make_case(1, 7, torch.float32, "hard")
    x = z.clone().requires_grad_()
    loss = ce.cross_entropy(x, t, block=64)
    torch.autograd.grad(loss, x, retain_graph=True)
    with pytest.raises(RuntimeError, match="already used"):
        torch.autograd.grad(loss, x)


# The CUDA caching allocator hands out blocks of at least 512 bytes, so a few small buffers
# already peak at 1024 B there (measured on an H200): the gradient must span many blocks for
# "no gradient-sized buffer" to be a bound with room, hence C = 4096 (40 KiB, 80 blocks).
ALLOCATOR_BLOCK = 512 if DEVICE == "cuda" else 1


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_memory_fwd_writes_no_gradient_and_fwd_bwd_one_buffer(ce, kind):
    b, c = 5, 4096
    z, t = make_case(b, c, torch.float16, kind)
    grad_bytes = b * c * z.element_size()

    def fwd():
        with torch.no_grad():
            return ce.cross_entropy(z, t, block=128)

    def both():
        return fwd_bwd(lambda x, tt: ce.cross_entropy(x, tt, block=128), z, t)

    # fwd: B fp32 row losses and scalars only, no gradient-sized buffer (README, Numerics §7
    # pitfall): a handful of allocator blocks against the gradient's 80.
    assert grad_bytes >= 64 * ALLOCATOR_BLOCK
    assert peak_bytes(fwd, torch.device(DEVICE)) <= max(8 * ALLOCATOR_BLOCK, grad_bytes // 16)
    # fwd_bwd: the gradient buffer is the only large allocation (the 1.05x bound);
    # the clone of the logits inside `fwd_bwd` is the caller's, counted here, so subtract it.
    assert peak_bytes(both, torch.device(DEVICE)) - grad_bytes <= 1.05 * grad_bytes


def test_bad_shapes_are_refused(ce):
    with pytest.raises(ValueError, match=r"\[B\]"):
        ce.rows(torch.zeros(3, 7), torch.zeros(2, dtype=torch.int64), None, 64)
    with pytest.raises(ValueError, match="power of two"):
        ce.rows(torch.zeros(3, 7), torch.zeros(3, dtype=torch.int64), None, 48)


def test_registered_for_cuda_with_both_target_kinds():
    v = REGISTRY["triton_fused"]
    assert v.devices == {"cuda"} and v.targets == {"soft", "hard"}
    assert v.runs_on("hard", "cuda:0") and not v.runs_on("hard", "cpu")


def test_import_harness_does_not_import_the_kernel():
    # The harness's own lazy import: the kernel module (and with it triton) loads at the first
    # call of triton_fused, not when the registry is built. torch itself imports triton on a
    # CUDA machine, so what is compared is triton's presence before and after the harness.
    code = (
        "import sys, torch; before = 'triton' in sys.modules; "
        "import harness, harness.cross_entropy.variants, harness.runner, harness.job; "
        "print(before, 'triton' in sys.modules, 'harness.kernel' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    before, after, kernel = out.stdout.split()
    assert kernel == "False" and after == before


# Rows 0, 1, 2 start at element 0, S and 2S with S = 2^30 + 64: row 2's offset (> 2^31) wraps
# to a wild address if the row index is int32, which crashes the process: hence a subprocess.
# The 4 GiB buffer is virtual; only the three rows' pages are ever touched.
_FAR_ROWS = textwrap.dedent("""
    import sys
    import torch
    from harness.kernel import rows
    C, S = 300, 2**30 + 64
    big = torch.empty(2 * S + C, dtype=torch.float16, device=sys.argv[1])
    z = big.as_strided((3, C), (S, 1))
    vals = (3 * torch.randn(3, C, generator=torch.Generator().manual_seed(0))).half()
    z.copy_(vals)
    y = torch.tensor([5, 200, 7], device=z.device)
    got = rows(z, y, None, 128).double().cpu()
    want = torch.logsumexp(vals.double(), 1) - vals.double()[torch.arange(3), y.cpu()]
    print(float((got - want).abs().max()))
""")


def test_row_offsets_past_2_31_elements():
    # Natively on a GPU (4 GiB of device memory); under the interpreter on a CPU-only machine,
    # where the buffer is virtual. (Triton 3.6's interpreter fails on a CUDA machine.)
    native = torch.cuda.is_available()
    env = {**os.environ, **({} if native else {"TRITON_INTERPRET": "1"})}
    out = subprocess.run(
        [sys.executable, "-c", _FAR_ROWS, "cuda" if native else "cpu"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-500:]}"
    assert float(out.stdout.strip()) < 1e-4


# ---- onepass and split paths ------------------------------------------------------------
#
# C = 300 with CHUNK 64 (K = 5, a last chunk of 44 columns) and C = 130 with CHUNK 64 (K = 3, a
# last chunk of 2 columns); onepass holds the row in one block of 512 / 256. Row r carries its
# maximum in chunk r % K, so the merge meets the winning partial at every position; row 0's
# target (its mass for soft targets) sits in the last chunk, row 1's on the row maximum (a
# confident, small loss), and the last row is scaled by another 100 (logits ~ 1e4 at scale 100:
# exp underflows to 0 for nearly every column, nothing is -inf).
SPLIT_SHAPES = [(4, 300, 64), (3, 130, 64)]


def split_case(b: int, c: int, chunk: int, dtype: torch.dtype, kind: str, scale: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    k = -(-c // chunk)
    z = scale * torch.randn(b, c, dtype=torch.float64, generator=g)
    z[-1] *= 100
    for r in range(b):
        col = min(c - 1, (r % k) * chunk + 3)
        z[r, col] = z[r].max() + 1
    y = torch.randint(c, (b,), generator=g)
    y[0] = c - 1
    y[1] = z[1].argmax()
    if kind == "hard":
        t = y
    else:
        t = torch.rand(b, c, dtype=torch.float64, generator=g)
        t /= t.sum(1, keepdim=True)
        t[0] = 0.1 / (c - 1)
        t[0, c - 1] = 0.9
        t = t.to(dtype)
    return z.to(dtype).to(DEVICE), t.to(DEVICE)


def run_rows(ce, z, t, path, block, write_grad=True):
    grad = torch.empty_like(z) if write_grad else None
    return ce.rows(z, t, grad, block, None, path), grad


def check_against_float64(loss_rows, grad, z, t, kind, dtype_name):
    ref = reference(z, t, kind)
    acc = assess(loss_rows.mean(), grad, ref, dtype_name)
    assert acc.status == "ok", (acc, tolerance(ref, dtype_name))
    # Per row too (a mean can hide one wrong row): loss_b = T lse - sum t z in float64.
    zz, lse = z.double(), torch.logsumexp(z.double(), 1)
    if kind == "hard":
        want = lse - zz.gather(1, t[:, None])[:, 0]
    else:
        tt = t.double()
        want = tt.sum(1) * lse - (tt * zz).sum(1)
    u = torch.finfo(loss_rows.dtype).eps
    bound = 64 * u * (zz.abs().amax(1) + math.log(z.shape[1]))
    assert ((loss_rows.double() - want).abs() <= bound).all(), (loss_rows, want)


@pytest.mark.parametrize("scale", [10.0, 100.0])
@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("dtype_name", ["fp32", "fp64"])
@pytest.mark.parametrize("path", ["onepass", "two_launch"])
@pytest.mark.parametrize("b,c,chunk", SPLIT_SHAPES)
def test_onepass_and_split_match_float64(ce, b, c, chunk, path, dtype_name, kind, scale):
    z, t = split_case(b, c, chunk, DTYPES[dtype_name], kind, scale)
    loss_rows, grad = run_rows(ce, z, t, path, None if path == "onepass" else chunk)
    assert loss_rows.dtype == (torch.float64 if dtype_name == "fp64" else torch.float32)
    check_against_float64(loss_rows, grad, z, t, kind, dtype_name)
    # the loss alone (no gradient written) is the same computation, bit for bit
    alone, _ = run_rows(ce, z, t, path, None if path == "onepass" else chunk, write_grad=False)
    assert torch.equal(alone, loss_rows)


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_split_in_16_bit_rounds_the_gradient_once(ce, kind):
    z, t = split_case(4, 300, 64, torch.bfloat16, kind, 10.0)
    loss_rows, grad = run_rows(ce, z, t, "two_launch", 64)
    assert grad.dtype == torch.bfloat16
    acc = assess(loss_rows.mean(), grad, reference(z, t, kind), "bf16")
    assert acc.status == "ok", acc


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_cooperative_with_one_chunk_never_waits(ce, kind):
    # K = 1: the program's own arrival completes its row, so the spin loop is never entered and
    # the cooperative kernel runs under the interpreter too. One partial merges to itself
    # exactly (M = m, S = s * exp(0)), so the result is onepass's bit for bit.
    z, t = split_case(3, 130, 256, torch.float32, kind, 10.0)
    coop, g_coop = run_rows(ce, z, t, "cooperative", 256)
    one, g_one = run_rows(ce, z, t, "onepass", 256)
    assert torch.equal(coop, one) and torch.equal(g_coop, g_one)
    check_against_float64(coop, g_coop, z, t, kind, "fp32")


@pytest.mark.skipif(DEVICE == "cuda", reason="the interpreter's refusal; on CUDA the kernel runs")
def test_cooperative_with_several_chunks_is_refused_under_the_interpreter(ce):
    z, t = split_case(2, 130, 64, torch.float32, "hard", 10.0)
    with pytest.raises(ValueError, match="two_launch"):
        run_rows(ce, z, t, "cooperative", 64)
    # "split" picks the two_launch form here
    loss_rows, grad = run_rows(ce, z, t, "split", 64)
    check_against_float64(loss_rows, grad, z, t, "hard", "fp32")


PLAN_TABLE = {
    (32768, "bf16", "hard", "fwd_bwd"): ("onepass", 32768, 32),
    (262144, "bf16", "hard", "fwd_bwd"): ("split", 8192, 16),
    (262144, "bf16", "hard", "fwd"): ("stream", 8192, 4),
    (32000, "fp32", "soft", "fwd_bwd"): ("split", 4096, 8),
}


def test_plan_follows_the_table(ce, monkeypatch):
    # patched where plan() reads it: harness.kernel re-exports the name, launch_table owns it
    monkeypatch.setattr(ce.launch_table, "LAUNCH_TABLE", PLAN_TABLE)
    bf16, f32 = torch.bfloat16, torch.float32
    assert ce.plan(32000, bf16, True, True) == ce.Plan("onepass", 32768, 32)
    assert ce.plan(1000, torch.float16, True, True) == ce.Plan("onepass", 1024, 4)  # fp16: bf16's rows
    assert ce.plan(128256, bf16, True, True) == ce.Plan("split", 8192, 16)
    assert ce.plan(10**6, bf16, True, True).path == "split"  # above the table: its largest entry
    assert ce.plan(128256, bf16, True, False) == ce.Plan("stream", 8192, 4)
    assert ce.plan(100, f32, False, True) == ce.Plan("onepass", 128, 4)  # a chunk covering the row
    assert ce.plan(5000, torch.float64, False, True) == ce.Plan("split", 4096, 8)  # fp64: fp32's rows
    assert ce.plan(300, bf16, True, True, block=64) == ce.Plan("stream", 64, 4)  # the earlier `block`
    assert ce.plan(300, bf16, True, True, block=64, path="two_launch", num_warps=2).num_warps == 2
    with pytest.raises(ValueError, match="path"):
        ce.plan(300, bf16, True, True, path="fast")
    with pytest.raises(ValueError, match="block >= C"):
        ce.plan(300, bf16, True, True, block=256, path="onepass")


def test_launch_table_entries_are_valid(ce):
    keys = {k[1:] for k in ce.LAUNCH_TABLE}
    assert keys == {(d, t, m) for d in ("bf16", "fp32") for t in ("hard", "soft") for m in ("fwd", "fwd_bwd")}
    for (c, _, _, mode), (path, block, warps) in ce.LAUNCH_TABLE.items():
        assert path in ce.PATHS and block & (block - 1) == 0 and warps in (1, 2, 4, 8, 16, 32)
        assert path != "onepass" or triton_next_pow2(c) <= ce.ONE_PASS_MAX_BLOCK
        assert mode == "fwd_bwd" or path == "stream"  # a forward alone: one read is the floor already


def test_table_onepass_entry_above_the_limit_falls_back_to_split(ce, monkeypatch):
    entry = (10**6, "fp32", "hard", "fwd_bwd")
    monkeypatch.setitem(ce.launch_table.LAUNCH_TABLE, entry, ("onepass", 1 << 20, 32))
    assert ce.plan(300_000, torch.float32, True, True).path == "split"


def triton_next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


# ---- the cooperative kernel natively (CUDA only) ----------------------------------------

NO_CUDA = (
    "needs a CUDA device: the cooperative kernel's programs wait on each other, "
    "which the interpreter (one program after another) cannot run"
)


def _check_rows_float64(z, t, hard, loss_rows, grad, rows_per_block=256):
    """(max relative error of the per-row losses, norm-wise relative error of the gradient)
    against float64, in row blocks (the float64 gradient of 8192 x 262144 would be 17 GB)."""
    b = z.shape[0]
    loss_err, num, den = 0.0, 0.0, 0.0
    for r in range(0, b, rows_per_block):
        zz = z[r : r + rows_per_block].double()
        lse = torch.logsumexp(zz, 1, keepdim=True)
        p = torch.exp(zz - lse)
        if hard:
            yy = t[r : r + rows_per_block, None]
            want = lse[:, 0] - zz.gather(1, yy)[:, 0]
            g = p.scatter_add(1, yy, -torch.ones_like(p[:, :1]))
        else:
            tt = t[r : r + rows_per_block].double()
            want = tt.sum(1) * lse[:, 0] - (tt * zz).sum(1)
            g = tt.sum(1, keepdim=True) * p - tt
        g /= b
        loss_err = max(
            loss_err, ((loss_rows[r : r + rows_per_block].double() - want).abs() / want.abs()).max().item()
        )
        num += (grad[r : r + rows_per_block].double() - g).square().sum().item()
        den += g.square().sum().item()
    return loss_err, math.sqrt(num / den)


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("dtype_name", ["bf16", "fp32"])
@pytest.mark.parametrize("c", [128256, 262144])
def test_cooperative_natively_matches_float64_and_repeats_bitwise(ce, c, dtype_name, kind):
    b, dtype, hard = 8192, DTYPES[dtype_name], kind == "hard"
    g = torch.Generator(device="cuda").manual_seed(c)
    z = (4 * torch.randn(b, c, device="cuda", generator=g)).to(dtype)
    if hard:
        t = torch.randint(c, (b,), device="cuda", generator=g)
    else:
        t = torch.rand(b, c, device="cuda", generator=g).to(dtype)
        t /= t.sum(1, keepdim=True)
    for chunk in (8192, 16384):
        grad = torch.empty_like(z)
        loss_rows = ce.rows(z, t, grad, chunk, None, "cooperative")
        loss_err, grad_err = _check_rows_float64(z, t, hard, loss_rows, grad)
        # fp32 arithmetic on the values as stored: the loss is fp32-accurate whatever the dtype;
        # the gradient is rounded once to the dtype (bf16: u = 2^-9).
        assert loss_err < 1e-5, (chunk, loss_err)
        assert grad_err < (1e-2 if dtype_name == "bf16" else 1e-5), (chunk, grad_err)
        # A race (a partial read before it was published) shows up as a result that moves.
        for _ in range(2):
            grad2 = torch.empty_like(z)
            assert torch.equal(ce.rows(z, t, grad2, chunk, None, "cooperative"), loss_rows)
            assert torch.equal(grad2, grad)
        del grad, grad2
