"""How a cross-entropy formula can break at large logit scales: the mechanisms a variant
declares with `breaks_by` and for which harness/cross_entropy/theory.py predicts the scale.

Each is a property of the formula's arithmetic, not of one implementation, so a new naive
variant names the mechanisms it has and gets its predictions, its place in the failure-boundary
figure and its row in the theory table without any other edit.
"""

MECHANISMS: dict[str, str] = {
    "sum_overflow": "sum_c exp(z_c) taken without a max shift rounds to inf",
    "prob_underflow": "the smallest probability rounds to 0 and meets its target's log: 0 * -inf = NaN "
    "(or +inf for a hard target)",
    "target_prob_underflow": "only the target's probability p[y] is read: it breaks once p[y] itself "
    "rounds to 0 (a random y sits at the median logit)",
}
