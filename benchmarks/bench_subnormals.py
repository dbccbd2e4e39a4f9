"""One LeNet-5 training step with subnormal weights and Adam state, as a long run had them, against the same step
after :func:`relief_nb.experiments.training.flush_subnormals` (what every epoch now starts with), in one run.

What it mimics: after the learning-rate step of the paper's LeNet-5 schedule, half of the weights of a real run
(222,842 of 431,080) and as many Adam moments were subnormal (below 1.2e-38), and x86 CPUs multiply subnormals
through a slow path. Here half of fc1's weights and their Adam moments are set to 1e-39, on synthetic images; each
round times one step from that state (the step itself makes most of them normal again), interleaved.
    python benchmarks/bench_subnormals.py --threads 1
"""

from __future__ import annotations

import argparse
import copy

import torch
from common import markdown_table, seconds
from torch import nn

from relief_nb.experiments.training import TrainConfig, flush_subnormals, make_optimizer
from relief_nb.models.zoo import create_model


def subnormal_state(batch: torch.Tensor, labels: torch.Tensor) -> tuple[nn.Module, dict]:
    model = create_model("lenet5", seed=0).to(memory_format=torch.channels_last)
    opt, _ = make_optimizer(model, TrainConfig(1))
    nn.functional.cross_entropy(model(batch), labels).backward()
    opt.step()  # creates Adam's state
    fc1 = model.fc1
    half = torch.arange(fc1.in_features) % 2 == 0
    with torch.no_grad():
        fc1.weight[:, half] = 1e-39
        for key in ("exp_avg", "exp_avg_sq"):
            opt.state[fc1.weight][key][:, half] = 1e-39
    return model, copy.deepcopy(opt.state_dict())


def step_time(model: nn.Module, opt_state: dict, batch: torch.Tensor, labels: torch.Tensor, flush: bool,
              steps: int) -> float:
    model = copy.deepcopy(model)
    opt, _ = make_optimizer(model, TrainConfig(1))
    opt.load_state_dict(opt_state)
    torch.set_flush_denormal(False)
    if flush:
        flush_subnormals(model, opt)

    def run() -> None:
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(batch), labels).backward()
            opt.step()

    return seconds(run) / steps


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as a sweep's worker)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps, rounds = (1, 1) if args.quick else (1, 5)
    g = torch.Generator().manual_seed(0)
    batch = torch.rand(120, 1, 28, 28, generator=g).to(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (120,), generator=g)
    model, opt_state = subnormal_state(batch, labels)
    best = {"subnormal": float("inf"), "flushed": float("inf")}
    for _ in range(rounds):  # interleaved; each round starts again from the subnormal state
        for name in best:
            best[name] = min(best[name], step_time(model, opt_state, batch, labels, name == "flushed", steps))
    rows = [{"model": "LeNet-5, half of fc1 subnormal", "threads": args.threads,
             "step, subnormal state": f"{1000 * best['subnormal']:.1f} ms",
             "step, flushed": f"{1000 * best['flushed']:.1f} ms",
             "speedup": f"{best['subnormal'] / best['flushed']:.1f}x"}]
    print(f"torch {torch.__version__}")
    print(markdown_table(rows))
    return rows


if __name__ == "__main__":
    main()
