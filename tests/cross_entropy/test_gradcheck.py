"""gradcheck in float64 for every registered variant whose backward is hand-written.

A variant has a custom backward when its autograd graph contains a node of a
torch.autograd.Function (a BackwardCFunction); the finite differences of gradcheck then check
that backward against the forward it claims to differentiate.
"""

from __future__ import annotations

import pytest
import torch

from harness.cross_entropy.variants import REGISTRY, Variant


def _custom_nodes(loss: torch.Tensor) -> list[str]:
    """Names of the torch.autograd.Function nodes in loss's graph."""
    seen, stack, found = set(), [loss.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, torch.autograd.function.BackwardCFunction):
            found.append(type(node).__name__)
        stack.extend(fn for fn, _ in node.next_functions)
    return found


def _has_custom_backward(v: Variant) -> bool:
    if v.setup is not None or "cpu" not in v.devices:  # compiled graphs hide their nodes
        return False
    z = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    t = (
        torch.tensor([0, 4])
        if "hard" in v.targets
        else torch.softmax(torch.randn(2, 5, dtype=torch.float64), 1)
    )
    return bool(_custom_nodes(v.fn(z, t)))


CUSTOM = [v for v in REGISTRY.values() if _has_custom_backward(v)]


def test_the_custom_backward_variants_are_found():
    assert {"chunked", "online"} <= {v.name for v in CUSTOM}


@pytest.fixture
def small_blocks(monkeypatch):
    # 3-class chunks over C = 8: three chunks, the last one partial, so the cross-chunk
    # merging and the per-chunk target handling are what gradcheck differentiates.
    import harness.cross_entropy.variants.chunked as chunked
    import harness.cross_entropy.variants.online as online

    monkeypatch.setattr(chunked, "CHUNK", 3)
    monkeypatch.setattr(online, "BLOCK", 3)


@pytest.mark.parametrize("variant", [pytest.param(v, id=v.name) for v in CUSTOM])
def test_gradcheck_float64(variant, small_blocks):
    g = torch.Generator().manual_seed(0)
    z = (3 * torch.randn(3, 8, dtype=torch.float64, generator=g)).requires_grad_()
    if "hard" in variant.targets:
        y = torch.tensor([0, 5, 7])  # first class, a middle chunk, the last (partial) chunk
        assert torch.autograd.gradcheck(lambda x: variant.fn(x, y), (z,))
    if "soft" in variant.targets:
        # unnormalised rows (T_b != 1): the T_b * softmax term of the gradient is checked too
        t = torch.rand(3, 8, dtype=torch.float64, generator=g)
        assert torch.autograd.gradcheck(lambda x: variant.fn(x, t), (z,))
