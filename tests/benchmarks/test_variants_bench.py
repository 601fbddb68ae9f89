"""Every registered variant at a few points, fwd and fwd_bwd, under pytest-benchmark.

    pytest -m bench tests/benchmarks --benchmark-autosave
    pytest -m bench tests/benchmarks --benchmark-compare --benchmark-compare-fail=median:15%

Pedantic mode: ROUNDS timed calls after WARMUP untimed ones, one call per round, so the
statistics are of single calls as in the harness's own rows. Each benchmark's extra_info holds
its configuration and the byte model (harness/cross_entropy/traffic.py), so GB/s can be computed
from a saved run. On CUDA the timed function synchronises: launches are asynchronous and an
unsynchronised call would time the launch only.
"""

from __future__ import annotations

import math

import pytest
import torch

from harness.cross_entropy import make_call
from harness.cross_entropy.inputs import make_inputs
from harness.cross_entropy.point import Point
from harness.cross_entropy.traffic import bytes_moved
from harness.cross_entropy.variants import REGISTRY
from harness.vocabulary import MODES

pytestmark = pytest.mark.bench

ROUNDS = 20  # timed calls per benchmark: enough for a stable median at these sizes
WARMUP = 3  # untimed calls first: allocator and caches settle (compilation happens before)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# (batch, classes, dtype, targets): why each is here
SHAPES = [
    (32, 1000, "fp32", "hard"),  # small: per-call overhead dominates (128 KB of logits)
    (256, 8192, "fp32", "soft"),  # 8 MiB logits + 8 MiB soft targets: past L2, memory-bound
    (64, 32000, "bf16", "hard"),  # a vocabulary-sized row in a low-precision dtype (4 MiB)
]

CASES = [
    pytest.param(
        v,
        Point(b, c, dtype, 1.0, device, targets, 0),
        mode,
        id=f"{v.name}-{device}-B{b}-C{c}-{dtype}-{targets}-{mode}",
    )
    for v in REGISTRY.values()
    for device in DEVICES
    for b, c, dtype, targets in SHAPES
    if v.runs_on(targets, device)
    for mode in MODES
]


@pytest.mark.parametrize("variant,point,mode", CASES)
def test_variant(benchmark, variant, point, mode):
    inputs = make_inputs(point)
    fn = variant.setup(variant.fn) if variant.setup is not None else variant.fn
    call = make_call(fn, inputs.logits, inputs.for_variant(variant.wants_one_hot(point.targets)), mode)
    if point.device.startswith("cuda"):

        def timed():
            out = call()
            torch.cuda.synchronize()
            return out
    else:
        timed = call
    timed()  # validation, and compilation for variants that compile, outside the statistics
    benchmark.extra_info.update(
        variant=variant.name,
        mode=mode,
        batch_size=point.batch_size,
        num_classes=point.num_classes,
        dtype=point.dtype,
        targets=point.targets,
        device=point.device,
        logit_scale=point.logit_scale,
        seed=point.seed,
        bytes_moved=bytes_moved(point, mode),
    )
    loss, grad = benchmark.pedantic(timed, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    assert loss.ndim == 0 and math.isfinite(loss.item())
    assert (grad is None) == (mode == "fwd")
    if not benchmark.disabled:  # --benchmark-disable runs each call once and keeps no statistics
        assert benchmark.stats.stats.median > 0
