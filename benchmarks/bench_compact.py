"""One retraining epoch of a pruned model: compact (removed units sliced away) against masked-dense, in one run.

Target (issue 15): the compact epoch is faster by at least 60 % of the FLOPs reduction (LeNet-5 at 5.5x fewer
FLOPs: an epoch at least 3.3x faster). Masks: the README's LeNet-5 run when its folder exists (``results/runs``),
ResNet-20 after one pass at alpha 0.9 (untrained, random images: no real CIFAR run exists on these machines).
The epoch itself runs on a synthetic data set of the right shape (its cost does not depend on the pixels).
    python benchmarks/bench_compact.py            # LeNet-5 and ResNet-20, 6000 images
    python benchmarks/bench_compact.py --quick    # tiny, for the test suite
"""

from __future__ import annotations

import argparse
import copy
import warnings

import torch
from common import RUNS, interleaved_best, markdown_table, pruned_model

from relief_nb.compact import CompactModel
from relief_nb.data import synthetic_dataset
from relief_nb.metrics import summary
from relief_nb.models import create_model, input_shape_of
from relief_nb.relief import ReliefConfig, ReliefWarning, relief_prune
from relief_nb.structure import trace_model
from relief_nb.training import TrainConfig, make_optimizer, train_epoch

DATASET_OF = {"lenet300-100": "mnist", "lenet5": "mnist", "resnet20": "cifar10"}


def masked_model(name: str) -> tuple[torch.nn.Module, str]:
    if name in ("lenet300-100", "lenet5"):
        return pruned_model(name, RUNS)
    model = create_model(name, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReliefWarning)
        relief_prune(model.eval(), torch.rand(256, *input_shape_of(name)), ReliefConfig(0.9, 0.9))
    return model, "one pass at alpha 0.9 on random images, untrained"


def measure(name: str, n: int, repeat: int) -> dict:
    ds = synthetic_dataset(DATASET_OF[name], n_train=n, n_test=10)
    masked, source = masked_model(name)
    masked = masked.to(memory_format=torch.channels_last)  # as experiments train it
    graph = trace_model(masked, input_shape_of(name))
    flops = summary(masked, graph)["flops_reduction"]
    compact = CompactModel(masked, graph)
    compact.check(input_shape_of(name))
    cfg = TrainConfig(1, batch_size=120)
    device = torch.device("cpu")

    def epoch(model: torch.nn.Module):
        model = copy.deepcopy(model)
        opt, _ = make_optimizer(model, cfg)
        g = torch.Generator().manual_seed(0)
        return lambda: train_epoch(model, ds.train_x, ds.train_y, ds, cfg, opt, device, g)

    best = interleaved_best({"masked": epoch(masked), "compact": epoch(compact.model)}, repeat)
    speedup = best["masked"] / best["compact"]
    return {"model": name, "images": n, "masked_epoch_s": f"{best['masked']:.2f}",
            "compact_epoch_s": f"{best['compact']:.2f}", "speedup": f"{speedup:.2f}x",
            "flops_reduction": f"{flops:.2f}x", "speedup_over_flops": f"{speedup / flops:.0%}",
            "compact_params": f"{compact.parameter_fraction():.1%}", "masks": source}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", nargs="*", default=["lenet5", "resnet20"])
    args = parser.parse_args(argv)
    n, repeat = (240, 1) if args.quick else (6000, 3)
    rows = [measure(name, n, repeat) for name in args.models]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(markdown_table(rows))
    return rows


if __name__ == "__main__":
    main()
