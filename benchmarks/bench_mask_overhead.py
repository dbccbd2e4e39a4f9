"""One training epoch of a masked (pruned) model against the same dense model, measured in one run.

Target (issue 5): the masks cost at most 10% more than dense training. Data: a fixed synthetic tensor data
set (the cost of an epoch does not depend on what the pixels show).
    python benchmarks/bench_mask_overhead.py            # LeNet-5 and ResNet-20, 6000 images
    python benchmarks/bench_mask_overhead.py --quick    # tiny, for the test suite
"""

from __future__ import annotations

import argparse
import copy

import torch
from common import interleaved_best, markdown_table

from relief_nb.data.datasets import synthetic_dataset
from relief_nb.experiments.training import TrainConfig, make_optimizer, train_epoch
from relief_nb.models.zoo import create_model
from relief_nb.pruning.relief import ReliefConfig, relief_prune

DATASET_OF = {"lenet300-100": "mnist", "lenet5": "mnist", "resnet20": "cifar10", "vgg11": "cifar10"}


def measure(name: str, n: int, repeat: int) -> dict:
    ds = synthetic_dataset(DATASET_OF[name], n_train=n, n_test=10)
    dense = create_model(name, seed=0).to(memory_format=torch.channels_last)  # as experiments train it
    masked = copy.deepcopy(dense)
    relief_prune(masked, ds.train_x[:256].float() / 255, ReliefConfig(0.9, 0.95))
    cfg = TrainConfig(1, batch_size=120)
    device = torch.device("cpu")

    def epoch(model):
        opt, _ = make_optimizer(model, cfg)
        g = torch.Generator().manual_seed(0)
        return lambda: train_epoch(model, ds.train_x, ds.train_y, ds, cfg, opt, device, g)

    best = interleaved_best({"dense": epoch(dense), "masked": epoch(masked)}, repeat)
    t_dense, t_masked = best["dense"], best["masked"]
    return {"model": name, "images": n, "dense_epoch_s": f"{t_dense:.2f}", "masked_epoch_s": f"{t_masked:.2f}",
            "overhead": f"{100 * (t_masked / t_dense - 1):+.1f}%"}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", nargs="*", default=["lenet5", "resnet20"])
    args = parser.parse_args(argv)
    n, repeat = (240, 1) if args.quick else (6000, 5)
    rows = [measure(name, n, repeat) for name in args.models]
    print(markdown_table(rows))
    return rows


if __name__ == "__main__":
    main()
