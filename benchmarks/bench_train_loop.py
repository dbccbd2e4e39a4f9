"""One training epoch and one evaluation with the device-resident loop against the loop it replaced
(``legacy_loop.py``: a host synchronisation per batch), interleaved in one run, on the paper's LeNets (MNIST-sized
synthetic stand-ins: speed only). On the CPU the two must be equally fast (nothing to synchronise with); on a GPU
the new loop is the point.
    python benchmarks/bench_train_loop.py --threads 1
"""

from __future__ import annotations

import argparse
import copy

import torch
from common import markdown_table, seconds
from legacy_loop import legacy_evaluate, legacy_train_epoch

from relief_nb import TrainConfig, create_model, evaluate, make_optimizer, synthetic_dataset, train_epoch


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as a sweep's worker)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n, rounds = (600, 1) if args.quick else (12000, 3)
    ds = synthetic_dataset("mnist", n_train=n, n_test=n // 6, seed=0)
    x, y = ds.train_x.to(device), ds.train_y.to(device)
    tx, ty = ds.test_x.to(device), ds.test_y.to(device)
    cfg = TrainConfig(1, batch_size=120)
    rows = []
    for name in ("lenet300-100", "lenet5"):
        base = create_model(name, 10, seed=0).to(device)
        best = {}
        for _ in range(rounds):  # interleaved
            for loop, (epoch_fn, eval_fn) in {"new": (train_epoch, evaluate),
                                              "old": (legacy_train_epoch, legacy_evaluate)}.items():
                model = copy.deepcopy(base)
                opt, _ = make_optimizer(model, cfg)
                g = torch.Generator().manual_seed(0)
                t_train = seconds(lambda m=model, o=opt, g=g, f=epoch_fn: f(m, x, y, ds, cfg, o, device, g))
                t_eval = seconds(lambda m=model, f=eval_fn: f(m, tx, ty, ds, device))
                old = best.get(loop, (float("inf"), float("inf")))
                best[loop] = (min(old[0], t_train), min(old[1], t_eval))
        rows.append({"model": name, "device": str(device), "threads": args.threads, "examples": n,
                     "epoch, old loop": f"{best['old'][0]:.3f} s", "epoch, new loop": f"{best['new'][0]:.3f} s",
                     "epoch ratio old/new": f"{best['old'][0] / best['new'][0]:.2f}",
                     "evaluation ratio old/new": f"{best['old'][1] / best['new'][1]:.2f}"})
    print(f"torch {torch.__version__}")
    print(markdown_table(rows))
    return rows


if __name__ == "__main__":
    main()
