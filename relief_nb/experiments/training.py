"""Training and evaluation on in-memory data: fresh optimizer + MultiStepLR per stage, coupled L2 decay.

The loop is device-resident: a run moves its data to the device once (uint8), each epoch's shuffled order moves
there once, batches are cut and augmented there, and the loss and the accuracy are summed there, so an epoch
synchronises with the host once (at its end) instead of at every batch. On CUDA the optimizer is the fused one.
With a fixed seed a run is deterministic per device, and on the CPU it gives exactly the weights of the loop it
replaced (``benchmarks/legacy_loop.py``; tests/test_training.py checks it). Precision: float32 by default;
``precision="bf16"`` trains under bfloat16 autocast (an option beyond the paper), while scoring and the
self-checks always run in strict float32 (:mod:`relief_nb.core.precision`). Knowledge distillation from the dense
network during retraining (``distill`` > 0, beyond the paper) mixes its soft targets into the loss
(:func:`distillation_loss`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from ..common.validation import expect
from ..core.modes import eval_mode
from ..data.datasets import Dataset, batches, prepare

PRECISIONS = ("fp32", "bf16")

__all__ = ["PRECISIONS", "TrainConfig", "TrainingDiverged", "distillation_loss", "evaluate", "flush_subnormals",
           "flush_to_zero", "make_optimizer", "train_epoch"]


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite: the step stopped before anything of it was saved."""


@dataclass(frozen=True)
class TrainConfig:
    """One training stage (pretraining, or retraining after a pruning step)."""

    epochs: int = 60
    optimizer: str = "adam"  # "adam" or "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4  # coupled L2 (added to the gradient), also with Adam, as in the paper's code
    milestones: tuple[int, ...] = field(default=(30,))
    gamma: float = 0.1
    batch_size: int = 120
    precision: str = "fp32"  # "fp32", or "bf16": bfloat16 autocast for the forward and backward (beyond the paper)
    # beyond the paper, retraining only: the weight of the dense network's soft targets in the loss, at this
    # temperature (Hinton et al., 2015; distillation_loss); 0 is the paper's cross-entropy
    distill: float = 0.0
    temperature: float = 4.0

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}; "
                             "for example precision='bf16' (bfloat16 autocast in training)")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        # a stage of no epoch would record an untrained (or unretrained) model as a result; a pruning pass without
        # retraining is relief_nb.relief_prune
        expect("epochs", self.epochs, (int,), lambda v: v >= 1, "an integer >= 1", "60")
        expect("batch_size", self.batch_size, (int,), lambda v: v >= 1, "an integer >= 1", "120")
        for name, example in (("lr", "0.001"), ("momentum", "0.9"), ("weight_decay", "0.0005"), ("gamma", "0.1")):
            positive = name == "lr"
            expect(name, getattr(self, name), (int, float), (lambda v: v > 0) if positive else (lambda v: v >= 0),
                   "a number > 0" if positive else "a number >= 0", example)
        expect("milestones", self.milestones, (tuple, list), lambda v: all(isinstance(m, int) and m >= 0 for m in v),
               "a list of epoch numbers", "(30,)")
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        expect("distill", self.distill, (int, float), lambda v: 0 <= v <= 1, "a weight in [0, 1]", "0.5")
        expect("temperature", self.temperature, (int, float), lambda v: v > 0, "a number > 0", "4")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        for f in fields(self):  # added later: left out at their defaults, so that the names of runs made before
            if f.name in ("distill", "temperature") and d[f.name] == f.default:  # them are unchanged
                del d[f.name]
        return d


def distillation_loss(logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor | None = None,
                      weight: float = 0.0, temperature: float = 4.0) -> torch.Tensor:
    """Cross-entropy with the labels, mixed with the teacher's soft targets (Hinton, Vinyals and Dean, 2015)::

        L = (1 - w) * CE(z, y) + w * T^2 * KL(softmax(z_t / T) || softmax(z / T))

    averaged over the batch, with ``z`` the student's logits, ``z_t`` the teacher's, ``w`` = ``weight`` and ``T`` =
    ``temperature`` (``T^2`` keeps the soft term's gradient on the scale of the hard one's). ``w = 0`` (or no
    teacher) is the plain cross-entropy the paper trains with."""
    hard = F.cross_entropy(logits, targets)
    if weight == 0 or teacher_logits is None:
        return hard
    soft = F.kl_div(F.log_softmax(logits / temperature, dim=1), F.log_softmax(teacher_logits / temperature, dim=1),
                    reduction="batchmean", log_target=True)
    return (1 - weight) * hard + weight * temperature ** 2 * soft


def make_optimizer(model: nn.Module, cfg: TrainConfig):
    """A fresh optimizer and its MultiStepLR scheduler (stepped once per epoch)."""
    params = [p for p in model.parameters() if p.requires_grad]
    # fused kernels on CUDA (one launch for all parameters); the CPU keeps torch's default, whose results the
    # experiments were measured with
    fused = {"fused": True} if params and params[0].device.type == "cuda" else {}
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fused)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg.milestones), gamma=cfg.gamma)
    return opt, sched


def flush_subnormals(model: nn.Module, opt: torch.optim.Optimizer | None = None) -> None:
    """Set the subnormal entries (0 < |x| < 1.2e-38 in float32) of ``model``'s parameters and ``opt``'s state to
    zero.

    Why: x86 CPUs compute on subnormal floats through a slow microcode path, and weight decay with Adam's decaying
    moments drives weights that get (almost) no gradient into that range. After the learning-rate step of the
    paper's LeNet-5 schedule, half of a run's weights were subnormal and a training step took 15x as long (650 ms
    against 43 ms, one thread; ``benchmarks/bench_subnormals.py``). The values changed are below 1.2e-38."""
    tensors = [p.data for p in model.parameters()]
    if opt is not None:
        tensors += [v for state in opt.state.values() for v in state.values()
                    if torch.is_tensor(v) and v.is_floating_point() and v.ndim]
    for t in tensors:
        t.masked_fill_(t.abs() < torch.finfo(t.dtype).tiny, 0)


@contextmanager
def flush_to_zero() -> Iterator[None]:
    """The CPU's flush-to-zero mode on this thread for the block, restored after it (it is a per-thread flag that
    threads inherit when they start, and other code, hypothesis for one, refuses to run under it)."""
    before = bool(torch.tensor([1e-39]).mul(1.0).item() == 0)  # torch has no getter for the flag
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def train_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ds: Dataset, cfg: TrainConfig,
                opt: torch.optim.Optimizer, device: torch.device, generator: torch.Generator,
                teacher: nn.Module | None = None) -> float:
    """One shuffled pass over (x, y); returns the mean training loss (the epoch's one host synchronisation).
    Subnormal weights and optimizer state are flushed to zero first (:func:`flush_subnormals`), and the epoch runs
    in flush-to-zero mode. ``x`` and ``y`` may live on ``device`` already (a run moves them there once). With a
    ``teacher`` and ``cfg.distill`` > 0 the loss is :func:`distillation_loss` on the same augmented batch."""
    flush_subnormals(model, opt)
    model.train()
    total = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: no sync per batch
    count = 0
    distill = teacher is not None and cfg.distill > 0
    if distill:
        teacher.eval()
    precision = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if cfg.precision == "bf16" else nullcontext
    with flush_to_zero():
        for xb, yb in batches(x, y, cfg.batch_size, shuffle=True, generator=generator):
            inputs = prepare(xb, ds, device, augment=True, generator=generator)
            targets = yb.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            with precision():
                if distill:
                    with torch.no_grad():
                        soft = teacher(inputs)
                    loss = distillation_loss(model(inputs), targets, soft, cfg.distill, cfg.temperature)
                else:
                    loss = F.cross_entropy(model(inputs), targets)
            loss.backward()
            opt.step()
            total += loss.detach().double() * len(yb)
            count += len(yb)
    return float(total) / max(count, 1)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ds: Dataset, device: torch.device,
             batch_size: int = 1000) -> float:
    """Accuracy (fraction in [0, 1]) of ``model`` on (x, y), in eval mode."""
    correct = torch.zeros((), dtype=torch.int64, device=device)  # counted on the device: one sync at the end
    with eval_mode(model):
        for xb, yb in batches(x, y, batch_size):
            pred = model(prepare(xb, ds, device)).argmax(1)
            correct += (pred == yb.to(device, non_blocking=True)).sum()
    return int(correct) / max(len(y), 1)
