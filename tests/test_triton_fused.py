"""triton_fused's kernel against the float64 reference: compiled on a CUDA machine, otherwise
on CPU tensors under Triton's interpreter.

Sizes are small because the interpreter runs each program in Python: C in {7, 100, 300} with
BLOCK 64/128, so no C is a multiple of the block, one row fits in a single masked block (7)
and the others need 2-3 blocks with a ragged tail; B in {1, 3, 5}, so B*C crosses many blocks.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap

import torch

# The interpreter must be chosen before triton itself is imported: Triton decorates its own
# library functions (tl.max, tl.sum, ...) at import time, compiled or interpreted. So this is
# set while the module is collected, and restored when its last test has run.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
_OLD_INTERPRET = os.environ.get("TRITON_INTERPRET")
_IN_PROCESS = DEVICE == "cuda" or "triton" not in sys.modules or _OLD_INTERPRET == "1"
if DEVICE == "cpu" and _IN_PROCESS:
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

from harness.cross_entropy.reference import reference  # noqa: E402
from harness.cross_entropy.tolerance import tolerance  # noqa: E402
from harness.cross_entropy.variants import REGISTRY  # noqa: E402
from harness.dtypes import DTYPES  # noqa: E402
from harness.measure.accuracy import assess  # noqa: E402
from harness.measure.memory import peak_bytes  # noqa: E402

MODULE = "harness.cross_entropy.kernel"


@pytest.fixture(scope="module")
def ce():
    """The kernel module, imported under the interpreter on CPU; the environment is restored
    after this module's tests (Triton reads the variable again at the first launch)."""
    if not _IN_PROCESS:
        pytest.skip(
            "triton was imported before this module without the interpreter: "
            "test_kernels_in_a_fresh_process runs these tests instead"
        )
    yield importlib.import_module(MODULE)
    if DEVICE == "cpu":
        if _OLD_INTERPRET is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = _OLD_INTERPRET


def test_kernels_in_a_fresh_process():
    if _IN_PROCESS:
        pytest.skip("the kernel tests run in this process")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stdout[-2000:]


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
        "print(before, 'triton' in sys.modules, 'harness.cross_entropy.kernel' in sys.modules)"
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
    from harness.cross_entropy.kernel import rows
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
