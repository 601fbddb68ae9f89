"""Probes of where PyTorch's CPU kernels round in fp16/bf16 (README, Numerics §4, *unverified* there).

  python -m harness.studies.precision

log_softmax overflow  F.log_softmax over C equal fp16 logits: the row sum of exp(z - max) is C;
                      if it is stored in fp16 it becomes inf from C = 65,520 and every
                      log-probability -inf, where fp32 would give -log C = -11.09.
nll_loss batch sum    F.nll_loss(logp, y) (mean) against the float64 mean of the same rounded
                      logp: relative error in units of u, over many batches. One rounding of an
                      fp32 sum gives <= 1 u (about 0.5 u typical); a sum kept in the input dtype
                      grows with B.
batch-sum overflow    fp16 F.cross_entropy at B = 64, C = 1000, logits 1000 * N(0, 1): the mean
                      loss is ~3,300 (< 65,504) but the batch's *sum* is ~210,000.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.dtypes import DTYPES, unit_roundoff


def log_softmax_equal_logits(dtype: torch.dtype, classes: tuple[int, ...] = (65519, 65520, 128256)) -> dict:
    """F.log_softmax of C equal logits (first entry) per C; the exact value is -log C."""
    return {c: F.log_softmax(torch.zeros(1, c, dtype=dtype), dim=-1)[0, 0].item() for c in classes}


def nll_sum_error(dtype: torch.dtype, batch: int = 4096, trials: int = 20, seed: int = 0) -> dict:
    """Median and max relative error (in u) of F.nll_loss's mean against the fp64 mean."""
    g = torch.Generator().manual_seed(seed)
    u = unit_roundoff(dtype)
    errs = []
    for _ in range(trials):
        logp = -(5 + torch.rand(batch, 8, generator=g)).to(dtype)  # ~-5.5: large enough to lose digits
        y = torch.randint(8, (batch,), generator=g)
        got = F.nll_loss(logp, y).double().item()
        ref = -logp.double()[torch.arange(batch), y].mean().item()
        errs.append(abs(got - ref) / abs(ref) / u)
    errs_t = torch.tensor(errs)
    return {"median_err_u": errs_t.median().item(), "max_err_u": errs_t.max().item()}


def batch_sum_overflow(seed: int = 0) -> dict:
    """fp16 F.cross_entropy (index and probability targets) at B=64, C=1000, scale 1000,
    next to the float64 loss on the same rounded logits."""
    g = torch.Generator().manual_seed(seed)
    z = (1000 * torch.randn(64, 1000, dtype=torch.float64, generator=g)).half()
    y = torch.randint(1000, (64,), generator=g)
    t = F.one_hot(y, 1000).half()
    return {
        "fp64_loss": F.cross_entropy(z.double(), y).item(),
        "fp16_index_targets": F.cross_entropy(z, y).item(),
        "fp16_prob_targets": F.cross_entropy(z, t).item(),
        "fp16_log_softmax_nll": F.nll_loss(F.log_softmax(z, -1), y).item(),
    }


def main() -> None:
    torch.set_num_threads(1)  # the probes ask how one kernel rounds, not how threads split it
    for name in ("fp16", "bf16"):
        print(
            f"{name} log_softmax of C equal logits (exact: -log C): {log_softmax_equal_logits(DTYPES[name])}"
        )
    for name in ("fp16", "bf16"):
        print(f"{name} nll_loss mean of 4096: {nll_sum_error(DTYPES[name])}")
    print(f"fp16 batch-sum overflow (B=64, C=1000, s=1000): {batch_sum_overflow()}")


if __name__ == "__main__":
    main()
