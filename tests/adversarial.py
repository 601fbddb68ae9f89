"""Adversarial points for the float64 reference, and their truth from mpmath at 60 digits.

The points are where a float64 cross-entropy loses digits if written naively: the target holding
the row maximum by margins from 0 to 800 (the loss is log1p of something tiny), ties, two or
three classes, logit scales from 1e-3 to 1e4, logits rounded from every dtype, soft rows whose
sum is 1 +- a few u. `python scripts/reference_error.py` prints the worst error over all of them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import mpmath
import torch

from harness.dtypes import DTYPES

DIGITS = 60
_TINY64 = torch.finfo(torch.float64).tiny


@dataclass(frozen=True)
class Case:
    name: str
    logits: torch.Tensor  # [B, C] in the case's dtype
    targets: torch.Tensor  # [B] int64 or [B, C] in the case's dtype
    kind: str


def _soft_rows(g: torch.Generator, b: int, c: int, dtype: torch.dtype, off_by_u: int) -> torch.Tensor:
    """Probability rows rounded to `dtype`, nudged so each sums to 1 + off_by_u * u."""
    t = torch.randn(b, c, dtype=torch.float64, generator=g).softmax(dim=1)
    t[:, 0] += off_by_u * torch.finfo(dtype).eps / 2
    return t.to(dtype)


def cases() -> list[Case]:
    """About 300 points; each one a small batch so that mpmath stays fast."""
    out: list[Case] = []
    g = torch.Generator().manual_seed(2024)
    for dtype_name, c, scale in itertools.product(DTYPES, (2, 3, 10, 1000), (1e-3, 1.0, 30.0, 1e4)):
        dtype = DTYPES[dtype_name]
        b = 2 if c < 1000 else 1
        z = (scale * torch.randn(b, c, dtype=torch.float64, generator=g)).to(dtype)
        if not torch.isfinite(z).all():
            continue  # fp16 at 1e4: no reference exists (tested elsewhere)
        label = f"{dtype_name} C={c} scale={scale:g}"
        y = torch.randint(c, (b,), generator=g)
        out.append(Case(f"{label} hard", z, y, "hard"))
        out.append(Case(f"{label} hard at max", z, z.argmax(dim=1), "hard"))
        for off in (-3, 0, 3):
            out.append(Case(f"{label} soft sum 1{off:+d}u", z, _soft_rows(g, b, c, dtype, off), "soft"))
    # The target above every other class by a margin: loss = log1p(sum exp(-margin - ...)).
    for dtype_name, c, margin in itertools.product(
        ("fp32", "fp64"), (2, 3, 10, 1000), (0.0, 1e-6, 1.0, 20.0, 100.0, 700.0, 800.0)
    ):
        dtype = DTYPES[dtype_name]
        z = torch.randn(1, c, dtype=torch.float64, generator=g)
        y = int(z.argmax())
        z[0, y] = z.max() + margin
        z = (z + 1000.0).to(dtype)  # a large common offset: lse - z_y cancels in the textbook form
        out.append(Case(f"{dtype_name} C={c} margin={margin:g} hard", z, torch.tensor([y]), "hard"))
        t = torch.full((1, c), 1e-3 / c, dtype=torch.float64)
        t[0, y] = 1 - 1e-3 * (c - 1) / c
        out.append(Case(f"{dtype_name} C={c} margin={margin:g} soft", z, t.to(dtype), "soft"))
    # Ties: every class equal, or the target tied with another maximum.
    for c in (2, 3, 10, 1000):
        z = torch.zeros(1, c, dtype=torch.float64)
        out.append(Case(f"C={c} all equal", z, torch.tensor([c - 1]), "hard"))
        z2 = torch.randn(1, c, dtype=torch.float64, generator=g) * 50
        top = int(z2.argmax())
        other = (top + 1) % c
        z2[0, other] = z2[0, top]
        out.append(Case(f"C={c} target tied at the max", z2, torch.tensor([other]), "hard"))
    return out


def _digits(case: Case) -> int:
    """Working digits for the textbook formula: when the target holds the maximum by a gap g,
    lse - z_y = log(1 + e^-g) loses g / ln 10 digits to the 1 + e^-g, so carry that many more
    than 60, up to the ~330 below which a loss is under float64's range anyway."""
    z = case.logits.double()
    top2 = z.topk(2, dim=1).values if z.shape[1] > 1 else torch.cat([z, z], dim=1)
    gap = float((top2[:, 0] - top2[:, 1]).max())
    magnitude = math.log10(1 + float(z.abs().max()))
    return DIGITS + min(int(gap / math.log(10)), 330) + int(magnitude) + 10


def truth(case: Case) -> tuple[mpmath.mpf, list[list[mpmath.mpf]]]:
    """(mean loss, gradient [B][C]) on the exact float64 values of the inputs, by the textbook
    formula, with enough digits that 60 survive its cancellation."""
    with mpmath.workdps(_digits(case)):
        z = [[mpmath.mpf(float(v)) for v in row] for row in case.logits.double().tolist()]
        b, c = len(z), len(z[0])
        if case.kind == "hard":
            t = [[mpmath.mpf(1 if j == int(y) else 0) for j in range(c)] for y in case.targets.tolist()]
        else:
            t = [[mpmath.mpf(float(v)) for v in row] for row in case.targets.double().tolist()]
        loss = mpmath.mpf(0)
        grad = []
        for zr, tr in zip(z, t):
            a = max(zr)
            e = [mpmath.exp(v - a) for v in zr]
            s = mpmath.fsum(e)
            lse = a + mpmath.log(s)
            total = mpmath.fsum(tr)
            loss += mpmath.fsum(tc * (lse - zc) for tc, zc in zip(tr, zr))
            grad.append([(total * ec / s - tc) / b for ec, tc in zip(e, tr)])
        return loss / b, grad


def errors(case: Case, loss: float, grad: torch.Tensor) -> tuple[float, float]:
    """(loss, gradient) relative errors of a float64 result against the truth. Where the true
    value is below float64's smallest normal, no float64 can hold it to relative precision:
    there the error is measured in units of that smallest normal instead (<= 1e-13 still)."""
    with mpmath.workdps(_digits(case)):
        true_loss, true_grad = truth(case)
        loss_err = abs(mpmath.mpf(loss) - true_loss) / max(abs(true_loss), _TINY64)
        g = grad.tolist()
        diff = mpmath.sqrt(
            mpmath.fsum((mpmath.mpf(gv) - tv) ** 2 for gr, tr in zip(g, true_grad) for gv, tv in zip(gr, tr))
        )
        norm = mpmath.sqrt(mpmath.fsum(tv**2 for tr in true_grad for tv in tr))
        return float(loss_err), float(diff / max(norm, _TINY64))


def worst(results: list[tuple[Case, float, float]]) -> tuple[tuple[str, float], tuple[str, float]]:
    loss = max(results, key=lambda r: r[1])
    grad = max(results, key=lambda r: r[2])
    return (loss[0].name, loss[1]), (grad[0].name, grad[2])
