"""A throwaway third family, as a user would write one: the row softmax of attention scores.

One module with a FAMILY, loaded by `family=tests.third_family` (harness/job.py loads a family
by import path), built only on the shared layers: the loss core (harness/loss/), the Family
hooks and Feed, the registry. tests/cli/test_families.py runs it through a sweep, rows, report and
compare.

The problem: y = softmax(z) over the C columns of scores z [B, C]. A softmax has no scalar loss,
so the family measures s = sum(y * r) for a fixed probe r [B, C] (drawn with the inputs), whose
gradient is the vector-Jacobian product every backward through a softmax computes:
ds/dz = y * (r - sum_c y_c r_c). Two variants: PyTorch's own, and exp / sum, which overflows
once a score passes ln(max of the dtype) (88.7 in fp32): `nonfinite` rows at large scales.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from harness.config import validate_device
from harness.dtypes import DTYPES, compute_roundoff, unit_roundoff
from harness.family import Family, Outputs
from harness.loss import settings
from harness.loss.errors import rel_err
from harness.loss.settings import get_setting, positive
from harness.measure.isolation import Feed
from harness.registry import Registry
from harness.vocabulary import COLUMN_DEFAULTS, POINT_COLUMNS

NAME = "softmax"
REGISTRY = Registry(NAME, signature="(scores [B, C], probe [B, C]) -> softmax [B, C]", mechanisms={})


@REGISTRY.register("torch_softmax", description="torch.softmax over the last dimension")
def torch_softmax(z: Tensor, probe: Tensor) -> Tensor:
    return torch.softmax(z, dim=-1)


@REGISTRY.register("exp_over_sum", description="exp(z) / sum exp(z): overflows past ln(max)")
def exp_over_sum(z: Tensor, probe: Tensor) -> Tensor:
    e = z.exp()
    return e / e.sum(dim=-1, keepdim=True)


@dataclass(frozen=True)
class Point:
    batch_size: int
    num_classes: int
    dtype: str
    logit_scale: float
    device: str
    seed: int
    targets: str = "hard"  # no targets here; the column every row holds

    @property
    def family(self) -> Family:
        return FAMILY

    @property
    def required_options(self) -> frozenset[str]:
        return frozenset()

    def columns(self) -> dict[str, Any]:
        cols = {name: getattr(self, name, COLUMN_DEFAULTS.get(name)) for name in POINT_COLUMNS}
        return {**cols, "family": NAME}

    def label(self) -> str:
        return (
            f"B={self.batch_size} C={self.num_classes} {self.dtype} scale={self.logit_scale:g} "
            f"{self.device} seed={self.seed}"
        )


def _point(cfg: Any) -> Point:
    dtype = settings.one_of(cfg, "dtype", DTYPES)
    return Point(
        batch_size=positive(cfg, "batch_size", 1),
        num_classes=positive(cfg, "num_classes", 2),
        dtype=dtype,
        logit_scale=settings.scale(get_setting(cfg, "logit_scale"), "logit_scale"),
        device=validate_device(get_setting(cfg, "device")),
        seed=settings.seed(get_setting(cfg, "seed"), "seed"),
    )


@dataclass
class Inputs:
    scores: Tensor  # [B, C] in the point's dtype
    probe: Tensor  # [B, C] in the point's dtype


def _inputs(p: Point) -> Inputs:
    g = torch.Generator().manual_seed(p.seed)
    z = torch.randn(p.batch_size, p.num_classes, dtype=torch.float64, generator=g) * p.logit_scale
    r = torch.randn(p.batch_size, p.num_classes, dtype=torch.float64, generator=g)
    dt = DTYPES[p.dtype]
    return Inputs(z.to(dt).to(p.device), r.to(dt).to(p.device))


@dataclass
class Reference:
    value: float
    grad: Tensor  # float64
    spread: float  # the widest row's max - min: exp(z - max) is off by about u * (max - z)


def _reference(scores: Tensor, probe: Tensor) -> Reference:
    z = scores.double()
    y = torch.softmax(z, dim=-1)  # shifts by the row max: exact to float64 here
    r = probe.double()
    s = (y * r).sum()
    spread = float((z.amax(dim=-1) - z.amin(dim=-1)).max())
    return Reference(float(s), y * (r - (y * r).sum(dim=-1, keepdim=True)), spread)


def _call(fn: Callable, feed: Feed, mode: str) -> Callable[[], Outputs]:
    def run() -> Outputs:
        z = feed.scores.detach().requires_grad_(mode == "fwd_bwd")
        with torch.set_grad_enabled(mode == "fwd_bwd"):
            s = (fn(z, feed.probe) * feed.probe).sum()
            grad = torch.autograd.grad(s, z)[0] if mode == "fwd_bwd" else None
        return s.detach(), grad

    return run


def _assess(outputs: Outputs, refs: tuple[Reference, Reference], p: Point) -> dict[str, Any]:
    """Norm-wise errors against float64, judged with a bound of a few roundings: the output's
    in the dtype, and the computing precision's grown with the sqrt of a row's length (a sum of
    C rounded terms) and with the row's spread (the error of exp(z - max) grows with z - max)."""
    s, grad = outputs
    ref = refs[0]
    bound = 16 * (
        unit_roundoff(DTYPES[p.dtype]) + compute_roundoff(p.dtype) * (p.num_classes**0.5 + ref.spread)
    )
    value = float(s)
    nan = int(torch.isnan(s).sum()) + (int(torch.isnan(grad).sum()) if grad is not None else 0)
    inf = int(torch.isinf(s).sum()) + (int(torch.isinf(grad).sum()) if grad is not None else 0)
    l_err = rel_err(value, ref.value)
    g_err = None
    if grad is not None:
        diff = torch.linalg.vector_norm(grad.double() - ref.grad).item()
        g_err = diff / max(torch.linalg.vector_norm(ref.grad).item(), 1e-300)
    status = "nonfinite" if nan or inf else "ok"
    if status == "ok" and (l_err > bound * (1 + abs(ref.value)) or (g_err is not None and g_err > bound)):
        status = "inaccurate"
    return {
        "loss": value,
        "loss_ref": ref.value,
        "loss_rel_err": l_err,
        "grad_rel_err": g_err,
        "loss_tolerance": bound * (1 + abs(ref.value)),
        "grad_tolerance": bound if grad is not None else None,
        "nan_count": nan,
        "inf_count": inf,
        "status": status,
        "message": "",
    }


def _references(p: Point, x: Inputs) -> tuple[Reference, Reference]:
    ref = _reference(x.scores, x.probe)
    return ref, ref


def _bytes_moved(p: Point, mode: str) -> int:
    """fwd: read z and r, write nothing but a scalar; fwd_bwd: also write the gradient."""
    elements = p.batch_size * p.num_classes * DTYPES[p.dtype].itemsize
    return (2 if mode == "fwd" else 3) * elements


FAMILY = Family(
    name=NAME,
    registry=REGISTRY,
    point=_point,
    make_inputs=_inputs,
    references=_references,
    guarded=lambda x: {"scores": x.scores, "probe": x.probe},
    unsupported=lambda variant, p: "",
    feed=lambda x, variant, p: Feed(scores=x.scores, probe=x.probe),
    call=_call,
    assess=_assess,
    bytes_moved=_bytes_moved,
    compute_floor_s=lambda p, x, mode: None,
    native="torch_softmax",
)
