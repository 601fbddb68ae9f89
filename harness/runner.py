"""Measure every variant at one point: accuracy, peak memory and time, in both modes.

For each (variant, mode) the order is: one call checked against the float64 reference (it
also validates the variant before anything is timed), one call under the memory tracker, then
the timed repetitions. A variant that raises, returns something other than a scalar or runs
out of memory gives a row with that status and message; the other variants still run.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable

import torch
from torch import Tensor

from harness.config import Point
from harness.inputs import Inputs, make_inputs
from harness.measure.accuracy import assess
from harness.measure.memory import peak_bytes
from harness.measure.timing import TimingStats, time_call
from harness.measure.traffic import bytes_moved
from harness.reference import Reference, reference
from harness.variants import Variant

MODES = ("fwd", "fwd_bwd")


class BadResult(Exception):
    """The variant returned something that is not a scalar loss."""


def _check_scalar(out: Any) -> Tensor:
    if not isinstance(out, Tensor):
        raise BadResult(f"returned {type(out).__name__}, expected a 0-dim tensor (the mean loss)")
    if out.numel() != 1:
        raise BadResult(f"returned a tensor of shape {list(out.shape)}, expected a scalar (the mean loss)")
    return out.reshape(())


def make_call(fn: Callable, logits: Tensor, targets: Tensor, mode: str) -> Callable[[], tuple[Tensor, Tensor | None]]:
    """The work one repetition does: fwd under no_grad, or fwd + the gradient wrt logits."""
    if mode == "fwd":
        def fwd() -> tuple[Tensor, None]:
            with torch.no_grad():
                return _check_scalar(fn(logits, targets)), None
        return fwd

    def fwd_bwd() -> tuple[Tensor, Tensor]:
        x = logits.detach().requires_grad_()
        loss = _check_scalar(fn(x, targets))
        if not loss.requires_grad:
            raise BadResult("returned a loss that does not depend on the logits (no gradient)")
        (grad,) = torch.autograd.grad(loss, x)
        return loss, grad
    return fwd_bwd


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "can't allocate memory" in str(exc)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


def measure(variant: Variant, mode: str, point: Point, inputs: Inputs, ref: Reference,
            timing: Any, memory: Any) -> dict:
    """One row's measured fields for (variant, mode) at this point."""
    row: dict[str, Any] = {"status": "ok", "message": "", "bytes_moved": bytes_moved(point, mode)}
    if not variant.runs_on(point.targets, point.device):
        row.update(status="unsupported",
                   message=f"{variant.name} runs on targets {sorted(variant.targets)} and devices {sorted(variant.devices)}")
        return row
    device = torch.device(point.device)
    try:
        targets = inputs.for_variant(variant.wants_one_hot(point.targets))
        call = make_call(variant.fn, inputs.logits, targets, mode)
        loss, grad = call()
        acc = assess(loss, grad, ref, point.dtype)
        del loss, grad
        row.update({k: v for k, v in asdict(acc).items()})
        if memory.enabled:
            row["peak_mem_bytes"] = peak_bytes(call, device)
        if timing.enabled:
            stats: TimingStats = time_call(call, device, timing.warmup, timing.min_reps,
                                           timing.min_time_s, timing.max_reps)
            row.update(time_median_s=stats.median, time_iqr_s=stats.iqr, time_min_s=stats.minimum,
                       reps=len(stats.samples), time_samples_s=stats.samples,
                       gbps=row["bytes_moved"] / stats.median / 1e9 if stats.median > 0 else None)
    except Exception as exc:  # any failure of the variant is a result, not a crash of the sweep
        row = {"bytes_moved": row["bytes_moved"], "message": _one_line(exc),
               "status": "oom" if _is_oom(exc) else "error"}
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def run_point(point: Point, variants: list[Variant], timing: Any, memory: Any,
              metadata: dict, on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """All rows of one point: len(variants) x len(MODES), in that order."""
    inputs = make_inputs(point)
    ref = reference(inputs.logits, inputs.targets, inputs.kind)
    point_fields = {
        "targets": point.targets, "batch_size": point.batch_size, "num_classes": point.num_classes,
        "dtype": point.dtype, "logit_scale": point.logit_scale, "device": point.device, "seed": point.seed,
    }
    rows = []
    for variant in variants:
        for mode in MODES:
            row = {"variant": variant.name, "mode": mode, **point_fields,
                   **measure(variant, mode, point, inputs, ref, timing, memory), **metadata}
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows
