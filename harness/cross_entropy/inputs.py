"""The inputs of one point: logits and targets, drawn in float64 and rounded once.

Logits (the `logits` setting):
  normal  logit_scale * N(0, 1), the notebook's draw.
  zipf    LLM-like rows: z_bc = logit_scale * (-ZIPF_ALPHA * ln r_bc + ZIPF_NOISE * N(0, 1)), where
          r_b is a random permutation of the ranks 1..C (each row has its own top classes). A
          trained language model's next-token distribution is like this: a few classes hold most
          of the mass and the loss sits near 2-3 nats. With alpha = 1.6 and noise 0.5 the rows'
          entropy is 2.4-2.7 nats and the top class holds ~0.44 at C = 1000, 32000 and 128256
          (measured on 16 rows each), and hard targets are drawn from each row's own softmax, so
          the mean loss is that entropy: the range of a real model, where Gaussian logits give
          ln C + s^2/2 (7-12 nats).
Targets: soft = softmax of an independent N(0, 1) draw (the notebook's construction), cast to
the point's dtype; hard = uniform class indices (normal logits) or drawn from the row's softmax
(zipf logits), with round(ignore_fraction * B) rows, chosen at random, set to ignore_index.
Class weights (`class_weights=seeded`): uniform in [0.5, 2) per class, rounded to the dtype.

Every variant and the float64 reference receive these same rounded tensors, so the reference
measures the algorithm's error alone.

The float64 draw is made in blocks of rows (`Draw.blocks`: about 2^22 elements each, one call
of each generator per block, in order) and never held whole: the rounded tensors are filled block
by block, and the total error's reference (float64 on the unrounded draw) walks the blocks again,
made anew from the seed, bit for bit the same. A point of at most 2^22 elements is one block:
the same single draw as a whole-tensor one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from harness import heap
from harness.cross_entropy.point import Point
from harness.loss.ahead import Recycled, ahead
from harness.loss.errors import row_slices
from harness.loss.weights import IGNORED_ROWS, MASKED, RANKS, class_weights, ignore_rows, options_generator

# Independent streams per seed: the logits do not change with the target kind, and the same
# standard-normal draw is reused across logit scales, so a failure boundary in `logit_scale`
# is the boundary of one fixed draw being stretched, not a new coin flip at each scale.
_LOGITS_STREAM, _TARGETS_STREAM = 0, 1
# The option draws (which rows are ignored, the class weights, zipf's ranks) come from the loss
# core's streams (harness/loss/weights.py), so turning an option on changes nothing else.

ZIPF_ALPHA = 1.6  # the logit of the class of rank r is -alpha ln r (+ noise)
ZIPF_NOISE = 0.5  # standard deviation of the per-logit noise, in nats
# Rows per block of the draw: about 2^22 float64 elements (32 MiB) per temporary, whatever C is.
# Part of the draw's definition (a block is one call of each generator): changing it changes the
# inputs of every point above 2^22 elements.
_BLOCK_ELEMENTS = 1 << 22


def _generator(device: torch.device, seed: int, stream: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(2 * seed + stream)


@dataclass(frozen=True)
class Draw:
    """A point's float64 draw before rounding, made block by block from its seed at each walk
    (nothing of it is held between walks: 8 bytes an element, twice fp32 logits)."""

    point: Point

    def blocks(self) -> Iterator[tuple[slice, Tensor, Tensor | None]]:
        """(rows, logits [R, C] float64, soft targets [R, C] float64 or None) per block, in order.
        Where `made_ahead` (a CPU, two or more torch threads, several blocks), each block is made
        in a second thread (its soft targets in a third) while the caller reads the one before
        (harness/loss/ahead.py): the draw is one thread's serial work, the references' reading of
        it the other half of a walk's. The same blocks, bit for bit: each generator is still
        drawn from in order, by one thread."""
        p = self.point
        soft = self._soft_targets() if p.targets == "soft" else None
        if not made_ahead(p):
            return self._blocks(soft)
        device = torch.device(p.device)
        if soft is None:
            walk = ahead(self._blocks(None, Recycled(torch.float64, device)))
        else:
            soft = ahead(self._soft_targets(Recycled(torch.float64, device)), spare_core=False)
            # a walk left early stops the soft targets' producer with the logits' one (else it
            # would wait, holding a block, until it is collected)
            walk = ahead(_ending(self._blocks(soft, Recycled(torch.float64, device)), soft.close))
        return _ending(walk, heap.give_back_free_pages)

    def _soft_targets(self, buffers: Recycled | None = None) -> Iterator[Tensor]:
        """The soft targets' blocks [R, C] float64: softmax of N(0, 1), their own stream.
        buffers: where the blocks are made (None: new tensors), the same values either way."""
        p = self.point
        device = torch.device(p.device)
        g = _generator(device, p.seed, _TARGETS_STREAM)
        for rows in row_slices(p.batch_size, p.num_classes, _BLOCK_ELEMENTS):
            shape = (rows.stop - rows.start, p.num_classes)
            if buffers is None:
                yield torch.randn(shape, dtype=torch.float64, device=device, generator=g).softmax(dim=1)
                continue
            normals, t = buffers.empty(shape), buffers.empty(shape)
            torch.randn(shape, dtype=torch.float64, device=device, generator=g, out=normals)
            torch.softmax(normals, 1, out=t)
            del normals  # its buffer is the next block's
            yield t
            del t  # the caller's now: its buffer is free once the caller lets go of it

    def _blocks(
        self, soft: Iterator[Tensor] | None, buffers: Recycled | None = None
    ) -> Iterator[tuple[slice, Tensor, Tensor | None]]:
        """The logits' blocks, each with the next of `soft` (the soft targets' blocks, or None).
        buffers: where the blocks are made (None: new tensors), the same values either way."""
        p = self.point
        device = torch.device(p.device)
        b, c = p.batch_size, p.num_classes
        g_logits = _generator(device, p.seed, _LOGITS_STREAM)
        zipf = p.logits == "zipf"
        if zipf:
            log_rank = torch.arange(1, c + 1, dtype=torch.float64, device=device).log_().mul_(-ZIPF_ALPHA)
            ranks = options_generator(device, p.seed, RANKS)
        masked = min(round(p.mask_fraction * c), c - 1)  # classes per row set to -inf
        confident = p.target_confidence > 0
        if masked:
            g_mask = options_generator(device, p.seed, MASKED)
        y = None
        if (masked or confident) and not zipf:
            # Uniform hard targets are known before the logits (their own stream, the draw
            # make_inputs makes): a target is never masked, and its logit can be set. The model's
            # own targets (zipf) are drawn from the masked softmax, which gives a masked class no
            # chance (zipf with target_confidence is refused).
            g_y = _generator(device, p.seed, _TARGETS_STREAM)
            y = torch.randint(c, (b,), device=device, generator=g_y)
        for rows in row_slices(b, c, _BLOCK_ELEMENTS):
            shape = (rows.stop - rows.start, c)
            z = None if buffers is None else buffers.empty(shape)
            z = torch.randn(shape, dtype=torch.float64, device=device, generator=g_logits, out=z)
            if zipf:  # -alpha ln(rank) + noise * N(0, 1), ranks shuffled per row
                order = torch.rand(shape, dtype=torch.float64, device=device, generator=ranks).argsort(dim=1)
                z.mul_(ZIPF_NOISE).add_(log_rank[order])
            z.mul_(p.logit_scale)
            if p.logit_offset:
                z.add_(p.logit_offset)
            if masked:  # the first `masked` classes of a random order per row; the target sorts last
                order = torch.rand(shape, dtype=torch.float64, device=device, generator=g_mask)
                if y is not None:
                    order.scatter_(1, y[rows, None], 2.0)
                z.scatter_(1, order.argsort(dim=1)[:, :masked], -math.inf)
            if confident:  # z_y = logit(p) + lse of the others: softmax gives the target p exactly
                zy = z.scatter(1, y[rows, None], -math.inf).logsumexp(dim=1, keepdim=True)
                odds = math.log(p.target_confidence) - math.log1p(-p.target_confidence)
                z.scatter_(1, y[rows, None], zy + odds)
            t = None if soft is None else next(soft)
            if p.width > c:  # padded classes: -inf columns after the vocabulary, never a target
                z = torch.nn.functional.pad(z, (0, p.width - c), value=-math.inf)
            yield rows, z, t
            del z, t  # the caller's now: their buffers are free once the caller lets go of them

    def whole(self) -> tuple[Tensor, Tensor | None]:
        """(logits, soft targets or None), float64, held whole: tests and small points."""
        parts = list(self.blocks())
        z = torch.cat([z for _, z, _ in parts])
        return z, None if parts[0][2] is None else torch.cat([t for _, _, t in parts])

    def rounded(self) -> Iterator[tuple[slice, Tensor, Tensor | None]]:
        """The same blocks rounded to the point's dtype, as the variants receive them."""
        dtype = self.point.torch_dtype
        for rows, z, t in self.blocks():
            yield rows, z.to(dtype), None if t is None else t.to(dtype)


def made_ahead(point: Point, threads: int | None = None) -> bool:
    """Whether a walk of the point's draw makes each block in a second thread (`Draw.blocks`):
    on a CPU (on a GPU the draw's kernels are queued: nothing waits on them), with two or more
    torch threads (`threads`; None: the caller's now), where the draw has several blocks. One
    block has nothing to overlap but its soft targets with its logits, which the targets'
    producer, begun when the logits' asks for them, does not: at 2^16-2^20 elements a walk took
    0.5-3.5 ms longer in threads (2.5 -> 4.0 ms, 39.5 -> 41.6 ms; the options sweep 21.8 -> 25.5 s)."""
    threads = torch.get_num_threads() if threads is None else threads
    if torch.device(point.device).type != "cpu" or threads < 2:
        return False
    return len(list(row_slices(point.batch_size, point.num_classes, _BLOCK_ELEMENTS))) > 1


def _ending(items: Iterator[Any], then: Callable[[], Any]) -> Iterator[Any]:
    """`items`, then `then()` however they end (exhausted, left early, or failed)."""
    try:
        yield from items
    finally:
        then()


@dataclass
class Inputs:
    logits: Tensor  # [B, C] point dtype, on the point's device
    targets: Tensor  # hard: [B] int64; soft: [B, C] point dtype
    draw: Draw  # the float64 draw before rounding, block by block (the total error's reference)
    kind: str  # "soft" | "hard"
    weight: Tensor | None = None  # [C] class weights in the point's dtype (class_weights=seeded)
    total: Any = None  # what make_inputs' `on_walk` made of the draw as it filled these tensors
    # spatial_size = d: the logits as (B/d, C, d), what the variants receive (`spatial_layout`);
    # a second copy, since the references and the comparisons walk rows of [B, C]
    spatial: Tensor | None = None

    def for_variant(self, one_hot: bool) -> Tensor:
        """Targets as a variant takes them: one-hot rows in the logits' dtype if asked."""
        if not one_hot:
            return self.targets
        rows = torch.zeros_like(self.logits)
        return rows.scatter_(1, self.targets[:, None], 1)  # (no ignored rows: such variants are unsupported)


Walk = Callable[[], Iterator[tuple[slice, Tensor, "Tensor | None"]]]


def spatial_layout(rows: Tensor, d: int) -> Tensor:
    """Logits [B, C] in F.cross_entropy's (N, C, d) form, N = B / d, contiguous as a model
    produces them (the classes d elements apart): row n d + j is [n, :, j]."""
    b, c = rows.shape
    return rows.view(b // d, d, c).transpose(1, 2).contiguous()


def row_layout(x: Tensor) -> Tensor:
    """(N, C, d) back to the rows [N d, C] of `spatial_layout` (a copy: the classes are strided)."""
    return x.transpose(1, 2).reshape(-1, x.shape[1])


def make_inputs(point: Point, on_walk: Callable[[Inputs, Walk], Any] | None = None) -> Inputs:
    """The point's rounded inputs. `on_walk(inputs, walk)`: given the inputs whose targets and
    weights are ready and whose logits (and soft targets) are still being filled, and a walk
    over the draw's blocks whose first pass is the one that fills them (each later pass draws
    again); what it returns is `Inputs.total`. So the total error's reference is made on the
    draw that fills the inputs, one draw of B x C normals fewer per point (1.4 s at 2^26 on a
    CPU core; twice that with soft targets). Where the targets come from the drawn logits
    (zipf), a pass cannot precede them: on_walk is not called."""
    device = torch.device(point.device)
    b, c = point.batch_size, point.width
    draw = Draw(point)
    logits = torch.empty((b, c), dtype=point.torch_dtype, device=device)
    soft = point.targets == "soft"
    targets = torch.empty((b, c), dtype=point.torch_dtype, device=device) if soft else None
    g = _generator(device, point.seed, _TARGETS_STREAM)
    # Zipf logits' hard targets are the model's own distribution: the loss is the rows' entropy.
    from_model = not soft and point.logits == "zipf"
    drawn = torch.empty(b, dtype=torch.int64, device=device) if from_model else None
    if not soft and not from_model:  # g serves these alone: before the logits or after, the same draw
        targets = _targets(torch.randint(point.num_classes, (b,), device=device, generator=g), point)
    weight = class_weights(point)
    if weight is not None and c > point.num_classes:  # a weight per column: 0 on the padded ones
        weight = torch.nn.functional.pad(weight, (0, c - point.num_classes))
    inputs = Inputs(logits=logits, targets=targets, draw=draw, kind=point.targets, weight=weight)

    def filling() -> Iterator[tuple[slice, Tensor, Tensor | None]]:
        for rows, z, t in draw.blocks():
            logits[rows] = z
            if soft:
                targets[rows] = t
            elif from_model:  # one class per row drawn from softmax(z_b), float64
                drawn[rows] = torch.multinomial(z.softmax(dim=1), 1, generator=g)[:, 0]
            yield rows, z, t

    fill = filling()
    if on_walk is not None and not from_model:
        first = [True]

        def walk() -> Iterator[tuple[slice, Tensor, Tensor | None]]:
            if first[0]:
                first[0] = False
                return fill
            return draw.blocks()

        inputs.total = on_walk(inputs, walk)
    for _ in fill:  # every block on_walk did not read (all of them without it)
        pass
    if from_model:
        inputs.targets = _targets(drawn, point)
    if point.spatial_size:
        inputs.spatial = spatial_layout(logits, point.spatial_size)
    return inputs


def _targets(drawn: Tensor, point: Point) -> Tensor:
    return ignore_rows(drawn, point, options_generator(drawn.device, point.seed, IGNORED_ROWS))
