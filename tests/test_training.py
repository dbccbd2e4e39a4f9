"""Training-loop details that change speed, not results: subnormal floats are flushed before every epoch."""

import torch
from torch import nn

from relief_nb.data.datasets import Dataset
from relief_nb.experiments.training import TrainConfig, make_optimizer, train_epoch


def subnormal_count(t: torch.Tensor) -> int:
    """Read from the bits (exponent 0, mantissa not 0): a comparison would see zero under denormals-are-zero."""
    bits = t.detach().float().view(torch.int32)
    return int((((bits & 0x7F800000) == 0) & ((bits & 0x7FFFFFFF) != 0)).sum())


def test_an_epoch_leaves_no_subnormal_weight_or_adam_state():
    # the first input feature is 0 in every example, so the weights reading it get no gradient: without the
    # flush, Adam leaves them (and their moments) exactly where they are, subnormal
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 4, generator=g)
    x[:, 0] = 0
    y = torch.randint(0, 3, (64,), generator=g)
    ds = Dataset("toy", x, y, x[:8], y[:8], num_classes=3, synthetic=True)
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight[:, 0] = 1e-40
    cfg = TrainConfig(1, weight_decay=0.0, batch_size=16)
    opt, _ = make_optimizer(model, cfg)
    # the state of a resumed run whose second moments decayed into the subnormal range
    opt.state[model.weight] = {"step": torch.tensor(100.0), "exp_avg": torch.zeros_like(model.weight),
                               "exp_avg_sq": torch.full_like(model.weight, 1e-41)}
    assert subnormal_count(model.weight) == 3

    train_epoch(model, x, y, ds, cfg, opt, torch.device("cpu"), torch.Generator().manual_seed(1))

    assert subnormal_count(model.weight) == 0 and (model.weight[:, 0] == 0).all()
    assert all(subnormal_count(v) == 0 for state in opt.state.values() for v in state.values()
               if torch.is_tensor(v) and v.is_floating_point())
    assert (model.weight[:, 1:].abs() > 1e-3).all()  # the trained weights are untouched
    assert torch.tensor([1e-39]).mul(1.0).item() != 0  # flush-to-zero was on for the epoch only
