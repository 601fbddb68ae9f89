"""The formulas of the seed notebook (README, Numerics §1), kept as written, bugs included.

  softmax_log                 -sum(t * log(softmax(z))) / B          correct until a p underflows
  seed_lse_zy                 sum(lse - zy) / B, max-shifted         correct only if every row of t sums to 1
  seed_labels_logsoftmax      -sum(t * (z - lse)) / B, max-shifted   correct
  seed_lse_labels             sum(sum_c lse * t - zy) / B            correct (the line marked 对)
  seed_lse_labels_broadcast   sum(lse * t - zy) / B, zy broadcast    wrong: CE - (C-1) * mean(zy)
  naive_exp                   -sum(t * log(exp(z) / sum exp(z))) / B no shift: overflows / underflows
  naive_exp_gather            -mean(log(p[y])), p = exp(z)/sum exp(z)  no shift, class indices:
                                                                     shows the sum's overflow alone

Every function takes logits [B, C] and probability targets [B, C] (hard targets arrive as
one-hot rows) unless registered for "hard", and returns the mean loss as a 0-dim tensor.
"""

import torch
from torch import Tensor

from harness.cross_entropy.variants import register


@register(
    "softmax_log",
    targets={"soft"},
    breaks_by=("prob_underflow",),  # max-shifted: its sum never overflows
    description="log of a (stable) softmax: NaN once any probability underflows to 0 (0 * -inf)",
)
def softmax_log(logits: Tensor, targets: Tensor) -> Tensor:
    """Notebook `ce_loss`: the information-theory formula on softmax probabilities."""
    q = torch.softmax(logits, dim=1)
    return -torch.sum(targets * torch.log(q)) / targets.shape[0]


def _shifted(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(z - max_c z, log sum exp(z - max)) per row: the notebook's overflow guard."""
    y = logits - torch.max(logits, dim=1, keepdim=True)[0]  # [B, C]
    lse = torch.log(torch.sum(torch.exp(y), dim=1, keepdim=True))  # [B, 1]
    return y, lse


@register(
    "seed_lse_zy",
    targets={"soft"},
    description="notebook CrossEntropyLoss: lse - zy; equals CE only when each target row sums to 1",
)
def seed_lse_zy(logits: Tensor, targets: Tensor) -> Tensor:
    # For unnormalised rows (T_b != 1) this is CE + mean_b((1 - T_b) * lse_b): the lse term
    # should be weighted by T_b. Our generated targets sum to 1, so it is correct here.
    y, lse = _shifted(logits)
    zy = torch.sum(y * targets, dim=1, keepdim=True)
    return torch.sum(lse - zy) / logits.shape[0]


@register(
    "seed_labels_logsoftmax", targets={"soft"}, description="notebook NewCrossEntropyLoss: -t * (z - lse)"
)
def seed_labels_logsoftmax(logits: Tensor, targets: Tensor) -> Tensor:
    y, lse = _shifted(logits)
    return -1 * torch.sum(targets * (y - lse)) / logits.shape[0]


@register(
    "seed_lse_labels", targets={"soft"}, description="notebook New2CrossEntropyLoss (the line marked 对)"
)
def seed_lse_labels(logits: Tensor, targets: Tensor) -> Tensor:
    y, lse = _shifted(logits)
    zy = torch.sum(y * targets, dim=1, keepdim=True)
    return torch.sum(torch.sum(lse * targets, dim=1, keepdim=True) - zy) / logits.shape[0]


def broadcast_closed_form(logits: Tensor, targets: Tensor) -> Tensor:
    """What seed_lse_labels_broadcast computes: CE - (C-1) * mean_b(zy_b), with zy_b the
    target-weighted *shifted* logit sum_c t_bc (z_bc - max_c z_bc)."""
    y = logits - logits.max(dim=1, keepdim=True).values
    ce = (torch.logsumexp(logits, dim=1) * targets.sum(dim=1) - (targets * logits).sum(dim=1)).mean()
    return ce - (logits.shape[1] - 1) * (targets * y).sum(dim=1).mean()


@register(
    "seed_lse_labels_broadcast",
    targets={"soft"},
    expected_wrong="zy [B,1] broadcasts over C classes: the loss is CE - (C-1)*mean(zy)",
    closed_form=broadcast_closed_form,
    description="the notebook's commented line marked 错 (wrong)",
)
def seed_lse_labels_broadcast(logits: Tensor, targets: Tensor) -> Tensor:
    # lse * labels is [B, C] and zy is [B, 1], so zy is subtracted C times per row instead of
    # once: the result is CE - (C-1) * mean_b(zy_b), with zy_b = sum_c t_bc * y_bc taken on
    # the *shifted* logits y = z - max_c z (the closed form the tests check).
    y, lse = _shifted(logits)
    zy = torch.sum(y * targets, dim=1, keepdim=True)
    return torch.sum(lse * targets - zy) / logits.shape[0]


@register(
    "naive_exp",
    targets={"soft"},
    breaks_by=("sum_overflow", "prob_underflow"),
    description="textbook exp(z)/sum(exp(z)) with no max-shift: the sum overflows, probabilities underflow",
)
def naive_exp(logits: Tensor, targets: Tensor) -> Tensor:
    e = torch.exp(logits)  # inf once z > ln(max)
    p = e / torch.sum(e, dim=1, keepdim=True)  # 0 (underflow) or NaN (inf / inf)
    return -torch.sum(targets * torch.log(p)) / logits.shape[0]


@register(
    "naive_exp_gather",
    targets={"hard"},
    breaks_by=("sum_overflow", "target_prob_underflow"),
    description="naive_exp reading only p[y]: +inf when the sum overflows or p[y] underflows, no 0*-inf NaN",
)
def naive_exp_gather(logits: Tensor, targets: Tensor) -> Tensor:
    e = torch.exp(logits)
    p_y = e.gather(1, targets[:, None]) / torch.sum(e, dim=1, keepdim=True)  # [B, 1]
    return -torch.log(p_y).mean()
