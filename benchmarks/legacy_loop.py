"""The training loop as it was before it became device-resident (relief_nb 0.2, main 7580861): a host
synchronisation per batch (``float(loss)``, ``int(correct)``) and indices on the CPU. Kept as the reference that
tests/test_training.py compares the current loop with (same weights for a fixed seed on the CPU) and that
bench_train_loop.py times against it. Not used by the package."""

from __future__ import annotations

import torch
from torch import nn

from relief_nb import TrainConfig, prepare
from relief_nb.core.modes import eval_mode
from relief_nb.data.dataset import Dataset
from relief_nb.experiments.training import flush_subnormals, flush_to_zero


def legacy_batches(x, y, batch_size, shuffle=False, generator=None):
    n = x.shape[0]
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]


def legacy_train_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ds: Dataset, cfg: TrainConfig,
                       opt: torch.optim.Optimizer, device: torch.device, generator: torch.Generator) -> float:
    flush_subnormals(model, opt)
    model.train()
    total, count = 0.0, 0
    loss_fn = nn.CrossEntropyLoss()
    with flush_to_zero():
        for xb, yb in legacy_batches(x, y, cfg.batch_size, shuffle=True, generator=generator):
            inputs = prepare(xb, ds, device, augment=True, generator=generator)
            targets = yb.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(yb)
            count += len(yb)
    return total / max(count, 1)


def legacy_evaluate(model, x, y, ds, device, batch_size=1000) -> float:
    correct = 0
    with eval_mode(model):
        for xb, yb in legacy_batches(x, y, batch_size):
            pred = model(prepare(xb, ds, device)).argmax(1)
            correct += int((pred == yb.to(device)).sum())
    return correct / max(len(y), 1)
