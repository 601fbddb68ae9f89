"""The CPU peak-memory tracker against functions whose allocations are known exactly."""

import torch

from harness.measure.memory import peak_bytes

from ..conftest import python_c

CPU = torch.device("cpu")


def test_one_new_tensor():
    x = torch.ones(1000, dtype=torch.float32)
    assert peak_bytes(lambda: x * 2, CPU) == 4000  # one fp32 [1000] result


def test_freed_temporaries_do_not_add_up():
    x = torch.ones(1000, dtype=torch.float64)

    def two_steps():
        a = x * 2  # 8000 B live
        del a  # ... freed
        b = x + 1  # 8000 B again: peak stays 8000, not 16000
        return b

    assert peak_bytes(two_steps, CPU) == 8000


def test_live_temporaries_add_up():
    x = torch.ones(250, dtype=torch.float32)

    def three_live():
        a = x * 2
        b = a * 2
        c = b * 2
        return a, b, c

    assert peak_bytes(three_live, CPU) == 3 * 1000


def test_views_and_in_place_ops_allocate_nothing():
    x = torch.ones(64, 64)

    def aliasing():
        v = x.view(-1)[:100]
        x.mul_(1.0)
        return v.t() if v.dim() == 2 else v

    assert peak_bytes(aliasing, CPU) == 0


def test_backward_is_seen():
    """(x * 3).sum() saves no tensor for backward, so the bytes are known exactly:
    forward peaks at x * 3 (2000 B) + the loss (4 B); backward holds the loss, its unit seed
    (4 B) and the [500] gradient (2000 B) = 2008 B. Without backward the peak would be 2004."""
    x = torch.ones(500, dtype=torch.float32)

    def fwd_bwd():
        xr = x.detach().requires_grad_()
        loss = (xr * 3).sum()
        return torch.autograd.grad(loss, xr)

    assert peak_bytes(fwd_bwd, CPU) == 2008


def test_a_process_that_never_compiles_does_not_load_dynamo():
    # torch wraps a dispatch mode in torch._disable_dynamo, whose first call imports Dynamo:
    # 1.6 s of every harness process on a CPU. The tracker takes that wrapper only once Dynamo
    # is loaded (harness/measure/memory.py `tracker`).
    code = (
        "import sys, torch\n"
        "from harness.measure.memory import peak_bytes\n"
        "x = torch.ones(1000)\n"
        "assert peak_bytes(lambda: x * 2, torch.device('cpu')) == 4000\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    assert python_c(code) == "False"


def test_a_compiled_call_is_tracked_as_its_eager_self():
    from harness.measure.memory import _CompileSafeTracker, tracker

    x = torch.ones(1000, dtype=torch.float32)
    eager = peak_bytes(lambda: x * 2, CPU)
    compiled = torch.compile(lambda t: t * 2, backend="eager", dynamic=False)
    compiled(x)  # Dynamo is loaded and the frame is compiled, as a variant's setup does
    assert isinstance(tracker(), _CompileSafeTracker)
    assert peak_bytes(lambda: compiled(x), CPU) == eager == 4000
